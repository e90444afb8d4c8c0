"""Files and tensors: reading, splitting and batching. Imports nothing from morec.models."""
from morec.data.batches import PairBatches, SequenceBatches, sample_negatives
from morec.data.files import ItemRow, UserIds, UserRow, read_items, read_user_ids, read_users
from morec.data.sequences import SequenceData, build_sequence_data, load_sequence_data, pad_left

__all__ = ["ItemRow", "UserIds", "UserRow", "read_items", "read_user_ids", "read_users", "SequenceData", "build_sequence_data",
           "load_sequence_data", "pad_left", "SequenceBatches", "PairBatches", "sample_negatives"]
