"""HuBERT-style masked-prediction pretraining of small teachers (k-means labels, span masking, codeword CE)."""
