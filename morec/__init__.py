"""MoRec vs IDRec: sequential recommenders whose item tower is an ID table or a modality encoder."""
__version__ = "0.1.0"
