"""Which samples a scan audits and how they are cut into client batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError, DataError, setting_ref

if TYPE_CHECKING:  # torch-backed: imported when a scan draws its samples
    from ..data.interface import SampleBatch
    from ..models.interface import LoadedModel

SAMPLES = setting_ref("samples")  # named in errors: the CLI shows --samples, a Python caller samples


def select(batch: SampleBatch, rows: list[int]) -> SampleBatch:
    """The samples ``rows`` of ``batch``, in that order (with the modality's payload)."""
    return batch.select(rows)


def draw(pool: SampleBatch, samples: int | None, seed: int) -> tuple[SampleBatch, str]:
    """Every sample (``samples`` None), or ``samples`` of them drawn without replacement with the seed, kept in
    the order they were found (so batches hold neighbours, as the files sort)."""
    available = len(pool)
    if samples is None:
        return pool, "all"
    if samples > available:
        raise DataError(f"{SAMPLES} {samples}: {pool.source} holds {available} sample(s); give {SAMPLES} "
                        f"{available} or fewer, or {SAMPLES} all")
    if samples == available:
        return pool, "all"
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows = sorted(torch.randperm(available, generator=generator)[:samples].tolist())
    return select(pool, rows), f"{samples} of {available} drawn with seed {seed}"


def split(pool: SampleBatch, size: int, model: LoadedModel, samples: int | None) -> tuple[list[SampleBatch], str]:
    """Client batches of ``size``; what a size that does not divide the count does to the remainder (a note).

    The remainder forms a last, smaller batch when the model can train at that size. When it cannot (an ONNX
    file with a fixed batch, train-mode BatchNorm that needs more than one value per channel), auditing those
    samples would need another threat model: with ``--samples N`` given that is exit 2 naming a count that
    divides evenly; with every sample (the default) they are left out and the note names them."""
    n = len(pool)
    full, rest = divmod(n, size)
    batches = [select(pool, list(range(i * size, (i + 1) * size))) for i in range(full)] if full > 1 or rest \
        else [pool]
    if not rest:
        return batches, ""
    from ..models.batchnorm import resolve_batch_size

    try:
        resolve_batch_size(model, rest)
    except ConfigError as e:
        why = str(e).split(": ", 1)[-1].split(";")[0]
        if samples is not None:
            raise DataError(f"{SAMPLES} {samples} at batch size {size} leaves a last batch of {rest}, which the "
                            f"model cannot train at ({why}); give {SAMPLES} {full * size} (a multiple of {size}) "
                            f"or another {setting_ref('batch_size')}") from None
        left = list(pool.names[full * size:])
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        return batches, (f"{rest} of {n} samples not audited ({shown}): a last batch of {rest} cannot train ({why}); "
                         f"give a sample count that is a multiple of {size}, or another --batch-size")
    batches.append(select(pool, list(range(full * size, n))))
    return batches, (f"{n} samples at batch size {size}: {full} batch(es) of {size} and a last batch of {rest} "
                     "(the remainder is audited as a smaller client batch)")
