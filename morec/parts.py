"""The parts a run is built from its Config: the device, the data, the model, the optimizer and
the batches (morec.train trains them; morec.runs keeps the run folder)."""
from __future__ import annotations

import logging
import math
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from morec.config import TOWER_MODALITIES, Config, run_setting
from morec.config_checks import validate
from morec.data import PairBatches, SequenceBatches, SequenceData, load_sequence_data
from morec.data.sequences import with_train_users
from morec.distributed import World, check_world, init_world
from morec.errors import InputError
from morec.features import item_tower_inputs
from morec.models import LayerMixFeatureTower, Recommender
from morec.models.build import build_model
from morec.resolve import run_specs
from morec.specs import RunSpecs
from morec.transfer import freeze_user_encoder

log = logging.getLogger("morec")


def resolve_device(name: str) -> torch.device:
    """The device of --device: "auto" is CUDA when available; a GPU that is not here is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} asked for, but CUDA is not available; use --device cpu")
    if name.startswith("cuda:") and int(name.partition(":")[2]) >= torch.cuda.device_count():
        raise InputError(f"--device {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def start_devices(cfg: Config) -> tuple[torch.device, World]:
    """This process's device and its place among torchrun's processes (one GPU per process)."""
    device = resolve_device(cfg.device)
    check_cpu_bf16(cfg, device)
    set_determinism(cfg.deterministic)
    world = init_world(device.type)
    check_world(run_setting(cfg)["world_size"], cfg.inbatch_chunk, world.size)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device, world


def load_data(cfg: Config) -> SequenceData:
    """The run's users and items, split; a fraction of the training users when asked."""
    validate(cfg)                             # every value checked before anything is written
    if cfg.prepared_data:                     # the same data, mapped from <cache_dir>/prepared (tests/test_prepared.py)
        from morec.data.prepared import prepared_sequence_data
        from morec.resolve import from_repo_root
        data = prepared_sequence_data(cfg.data_dir(), cfg.behaviors, cfg.news, cfg.max_seq_len, cfg.min_seq_len,
                                      cfg.warm_min_count, from_repo_root(cfg.cache_dir))
    else:
        data = load_sequence_data(cfg.data_dir(), cfg.behaviors, cfg.news, cfg.max_seq_len,
                                  cfg.min_seq_len, cfg.warm_min_count)
    warn_if_few_items(data.num_items, data.num_users, cfg.warm_min_count)
    return with_train_users(data, cfg.train_user_fraction) if cfg.train_user_fraction < 1 else data


def warn_if_few_items(num_items: int, num_users: int, warm_min_count: int) -> None:
    """A warning when fewer items are ranked than the largest K of the metrics (morec.evaluate.KS):
    HR@K over so few items counts every target that is not masked as a hit, so the number says
    little (e.g. a strict warm setting on a sparse data set: Amazon Scientific at warm_min_count 20
    keeps 7 items)."""
    from morec.evaluate import KS
    if num_items <= max(KS):
        log.warning("only %d items (and %d users) are left%s: HR@K / NDCG@K with K >= %d rank every item, "
                    "so they say little; use a lower --warm_min_count or a larger data set", num_items,
                    num_users, f" after --warm_min_count {warm_min_count}" if warm_min_count else "", num_items)


def build_run_model(cfg: Config, data: SequenceData, device: torch.device, specs: RunSpecs | None = None) -> Recommender:
    """The recommender of `cfg` on `device`, initialised from cfg.seed; `specs`: cfg's, if already resolved."""
    specs = specs or run_specs(cfg)
    item_inputs = item_tower_inputs(specs.item_inputs, data, device)   # modality towers: item tokens / cached features
    if specs.item_inputs.tower.text.cache_frozen_layers:               # the frozen blocks' output, cached once
        from morec.layer_cache import frozen_layer_states
        item_inputs["layer_states"] = frozen_layer_states(specs.item_inputs, data, item_inputs["tokens"], device)
    torch.manual_seed(cfg.seed)
    popularity = torch.from_numpy(data.popularity()).clamp_min(1e-30)   # (N+1,), > 0 so log is finite
    model = build_model(specs.model, data.num_items, data.num_users, popularity, item_inputs).to(device)
    if cfg.freeze_user_encoder:                               # linear-probe-style transfer
        log.info("--freeze_user_encoder: %d user-encoder parameters do not train", freeze_user_encoder(model))
    log_encoder_semantics(cfg)
    if device.type == "cuda":
        for module in model.modules():
            if hasattr(module, "use_channels_last"):          # a ResNet vision tower
                module.use_channels_last()
    return model


def log_encoder_semantics(cfg: Config) -> None:
    """Say in the log what --freeze_bn_stats, --encoder_dropout, --cache_frozen_layers and --inbatch_chunk compute."""
    modalities = TOWER_MODALITIES.get(cfg.item_tower, ())
    end_to_end = not cfg.two_stage
    if cfg.freeze_bn_stats and "vision" in modalities and end_to_end:
        log.info("--freeze_bn_stats: the vision encoder's BatchNorm layers normalise with their running "
                 "statistics in training too and never update them (eval-mode BatchNorm)")
    if cfg.encoder_dropout >= 0 and "text" in modalities and end_to_end:
        log.info("--encoder_dropout %g: every dropout probability of the text encoder's config set to it",
                 cfg.encoder_dropout)
    if cfg.cache_frozen_layers and "text" in modalities and end_to_end:
        log.info("--cache_frozen_layers: the frozen blocks' output is read from the layer cache, computed once in "
                 "eval mode (no dropout there, unlike the uncached path unless --encoder_dropout 0)")
    if cfg.inbatch_chunk > 0:
        log.info("--inbatch_chunk %d (gradient caching): loss and gradients equal the plain step's when the item "
                 "tower has no dropout (--encoder_dropout 0); with dropout on, the masks are drawn per chunk "
                 "(same distribution, other masks)", cfg.inbatch_chunk)


def build_optimizer(model: Recommender, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with two groups: the pretrained encoder (fine_tune_*) and everything else."""
    encoder = [p for p in model.item_tower.encoder_parameters() if p.requires_grad]
    mix = [p for m in model.modules() if isinstance(m, LayerMixFeatureTower) for p in (m.layer_scalars, m.gamma)]
    own_group = {id(p) for p in encoder + mix}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own_group]
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.l2_weight}]
    encoder_all = model.item_tower.encoder_parameters()
    if encoder_all:
        log.info("trainable encoder tensors: %d of %d (%d of %d parameters, lr %g, weight decay %g)",
                 len(encoder), len(encoder_all), sum(p.numel() for p in encoder),
                 sum(p.numel() for p in encoder_all), cfg.fine_tune_lr, cfg.fine_tune_l2_weight)
    log.info("trainable recommender tensors: %d (%d parameters, lr %g, weight decay %g)",
             len(rest), sum(p.numel() for p in rest), cfg.lr, cfg.l2_weight)
    vision = vision_encoder_group(model, cfg)                # text+vision: the vision encoder's own lr
    encoder = [p for p in encoder if id(p) not in {id(q) for q in vision.get("params", [])}]
    if encoder:
        groups.append({"params": encoder, "lr": cfg.fine_tune_lr, "weight_decay": cfg.fine_tune_l2_weight})
    if vision:
        groups.append(vision)
    if mix:                                       # --ts_layers all: the scalar mix, its own lr (docs/parameters.md)
        log.info("scalar mix of the layers: %d parameters, lr %g, no weight decay", sum(p.numel() for p in mix),
                 cfg.ts_mix_lr)
        groups.append({"params": mix, "lr": cfg.ts_mix_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def vision_encoder_group(model: Recommender, cfg: Config) -> dict:
    """item_tower text+vision: the vision encoder's trainable parameters with cv_fine_tune_lr
    (-1: fine_tune_lr); {} for every other tower (their groups stay as they were)."""
    from morec.models.multimodal import MultiModalTower
    towers = [m for m in model.item_tower.modules() if isinstance(m, MultiModalTower)]
    params = [p for tower in towers for p in tower.vision_encoder_parameters() if p.requires_grad]
    if not params:
        return {}
    lr = cfg.fine_tune_lr if cfg.cv_fine_tune_lr == -1 else cfg.cv_fine_tune_lr
    log.info("of these, the vision encoder's %d tensors (%d parameters) train with lr %g", len(params),
             sum(p.numel() for p in params), lr)
    return {"params": params, "lr": lr, "weight_decay": cfg.fine_tune_l2_weight}


def make_batches(cfg: Config, data: SequenceData) -> SequenceBatches | PairBatches:
    """The training batches: sequences (SASRec and the next-item models) or (user, item) pairs (DSSM)."""
    train = torch.from_numpy(data.train)
    if cfg.model == "dssm":
        return PairBatches(train, cfg.batch_size, data.num_items, cfg.neg_num if cfg.loss == "bce" else 0,
                           cfg.extra_negatives)
    return SequenceBatches(train, cfg.batch_size, data.num_items, with_negatives=cfg.loss == "bce",
                           extra_negatives=cfg.extra_negatives)


def distributed_trainer(model: Recommender, cfg: Config, world: World, device: torch.device) -> torch.nn.Module:
    """What the loop calls for the loss: the model, wrapped in DDP across ranks, compiled on request."""
    model.distribute(world, cfg.gather_negatives)
    if cfg.sync_bn:
        sync_batch_norm(model, world, device)
    trainer = model
    if world.distributed:
        trainer = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(trainer) if cfg.compile_model else trainer


def cpu_supports_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 instructions: x86 AVX512-BF16 or AMX (as torch.cpu detects them),
    or the flag `avx512_bf16` / `amx_bf16` (x86) or `bf16` (ARM) in `cpuinfo` (Linux's). Without
    them autocast emulates bf16 by converting to and from fp32: no faster, only less exact."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if getattr(torch.cpu, probe, lambda: False)():
            return True
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            flags = {flag for line in lines if line.lower().startswith(("flags", "features"))
                     for flag in line.partition(":")[2].split()}
    except OSError:                            # not Linux: the torch probes above are the answer
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def check_cpu_bf16(cfg: Config, device: torch.device) -> None:
    """Refuse --cpu_amp on a CPU without bf16 instructions (cpu_supports_bf16), before anything is written."""
    if device.type == "cpu" and run_setting(cfg)["precision"] == "bf16" and not cpu_supports_bf16():
        raise InputError("--cpu_amp true asks for bf16 autocast on the CPU, but this CPU has no bf16 instructions "
                         "(AVX512-BF16, AMX or ARM bf16): it would only emulate bf16, slower than fp32; drop "
                         "--cpu_amp (train in fp32) or train on a CPU or GPU with bf16 support")


def autocast(cfg: Config, device: torch.device) -> torch.autocast:
    """Training's mixed precision (run_setting's "precision"): on CUDA when cfg.amp (bf16, or fp16
    with the run's GradScaler); on the CPU only with the cfg.cpu_amp opt-in (bf16, no scaler);
    else off (fp32, the CPU default)."""
    dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=cfg.amp and (device.type == "cuda" or cfg.cpu_amp))


def grad_scaler(cfg: Config, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler: on for fp16 autocast on CUDA only (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "fp16" and device.type == "cuda")


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The lr multiplier after `step` optimizer steps (SPEC "Training": no schedule by default,
    warm-up + cosine as an option): linear warm-up step / warmup_steps over the first
    warmup_steps, then 1 (schedule none) or 0.5 (1 + cos(pi t)) with t the share of the remaining
    total_steps - warmup_steps done (cosine: 1 right after the warm-up, 0 at total_steps; the
    schedule of HF transformers' get_cosine_schedule_with_warmup)."""
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "none":
        return 1.0
    done = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * done))


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Config,
                 steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's lr schedule over `epoch` x `steps_per_epoch` optimizer steps, stepped once per
    optimizer step (a skipped one included), so the lr is a function of the step; its state is in
    checkpoint_last.pt, so a resumed run continues it exactly. The defaults (none, no warm-up)
    multiply every lr by 1.0: today's constant lr."""
    total = cfg.epoch * steps_per_epoch
    if cfg.lr_schedule != "none" or cfg.warmup_steps:
        log.info("lr schedule %s, %d warm-up step(s), %d optimizer steps in all", cfg.lr_schedule,
                 cfg.warmup_steps, total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.lr_schedule, cfg.warmup_steps, total))


def set_determinism(on: bool) -> None:
    """--deterministic (torchvision's references' --use-deterministic-algorithms): cuDNN
    deterministic with benchmarking off, torch.use_deterministic_algorithms (an op without a
    deterministic implementation then raises, naming itself) and the cuBLAS workspace setting it
    needs. Off (the default) changes nothing. On the CPU a run is already repeatable bit for bit
    (same seed, machine and thread count); on a GPU this makes it so (same GPU model, driver and
    torch); CPU and GPU runs never match bit for bit (docs/parameters.md)."""
    if not on:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")     # read when cuBLAS starts
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    log.info("--deterministic: deterministic algorithms, cuDNN deterministic, cuDNN benchmark off")


def sync_batch_norm(model: Recommender, world: World, device: torch.device) -> int:
    """--sync_bn: the model's BatchNorm layers become torch.nn.SyncBatchNorm (same parameters and
    running statistics), so under DDP each normalises over every rank's batch. One process:
    nothing to synchronise, the model is left as it is. Needs CUDA (NCCL). Returns the layers
    converted."""
    if not world.distributed:
        log.info("--sync_bn: one process, its BatchNorm statistics are already the whole batch's")
        return 0
    if device.type != "cuda":
        raise InputError(f"--sync_bn needs CUDA under DDP (SyncBatchNorm runs on GPUs); the device is {device}: "
                         "drop --sync_bn or train on GPUs")
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)   # in place below the root (no BatchNorm itself)
    converted = sum(isinstance(module, torch.nn.SyncBatchNorm) for module in model.modules())
    log.info("--sync_bn: %d BatchNorm layer(s) synchronised across %d ranks", converted, world.size)
    return converted
