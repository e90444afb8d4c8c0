"""The memory estimate made before a run allocates anything."""
import pytest
import torch

from morec.config import Config
from morec.errors import InputError
from morec.memory import available_bytes, check_memory, estimate, parameter_count
from morec.resolve import memory_spec, model_spec
from morec.parts import build_run_model, load_data


@pytest.mark.parametrize("values", [
    dict(),                                                              # ml-100k ID SASRec
    dict(embedding_dim=32, transformer_block=3, max_seq_len=7, num_attention_heads=4),
    dict(model="dssm", loss="bce", dnn_layers=2),
    dict(model="gru4rec", embedding_dim=32),
    dict(model="nextitnet", embedding_dim=32, transformer_block=3),
])
def test_parameter_count_is_the_models(values):
    cfg = Config(**values)
    data = load_data(cfg)
    model = build_run_model(cfg, data, torch.device("cpu"))
    real = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert parameter_count(model_spec(cfg), data.num_items, data.num_users) == real


def test_a_run_that_does_not_fit_is_refused_before_allocating():
    cfg = Config(embedding_dim=64)
    need = sum(estimate(memory_spec(cfg), 1682, 943).values())
    check_memory(memory_spec(cfg), 1682, 943, available=need)       # exactly fits
    with pytest.raises(InputError, match="this run needs at least .* GiB .*lower --embedding_dim"):
        check_memory(memory_spec(cfg), 1682, 943, available=need - 1)


def test_huge_values_are_refused_on_this_machine():
    for cfg in (Config(embedding_dim=1_000_000), Config(max_seq_len=100_000)):
        with pytest.raises(InputError, match="this run needs at least"):
            check_memory(memory_spec(cfg))
    check_memory(memory_spec(Config()))                             # the default ml-100k run fits


def test_available_memory_is_measured():
    total = int(open("/proc/meminfo").readline().split()[1]) * 1024
    assert 0 < available_bytes(torch.device("cpu")) <= total


def test_extra_negatives_count_in_the_estimate():
    """--extra_negatives K adds K logit columns to every row and K candidate vectors: an
    impossible K is refused by the estimate, naming the flag, not by the allocator."""
    base, extra = Config(), Config(extra_negatives=1000)
    rows = base.batch_size * base.max_seq_len
    grown = sum(estimate(memory_spec(extra)).values()) - sum(estimate(memory_spec(base)).values())
    assert grown >= 4 * 3 * rows * 1000
    assert sum(estimate(memory_spec(extra), training=False).values()) == \
        sum(estimate(memory_spec(base), training=False).values())          # evaluation draws none
    with pytest.raises(InputError, match=r"extra negatives' logit columns .*lower .*--extra_negatives"):
        check_memory(memory_spec(Config(extra_negatives=100_000_000)))
    dssm = Config(model="dssm", extra_negatives=100_000_000)
    with pytest.raises(InputError, match="extra negatives"):
        check_memory(memory_spec(dssm))
