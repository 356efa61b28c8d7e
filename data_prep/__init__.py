"""Data preparation: synthetic PET/CT phantoms (phantom), TFRecord sets (convert), checks (inspect, info), demo data.

Run `python -m data_prep --help`.
"""
