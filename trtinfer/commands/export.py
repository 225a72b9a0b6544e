"""``trtinfer export triton``: artifacts -> a Triton Inference Server model repository (scale-out)."""

from __future__ import annotations

from pathlib import Path

import click

from trtinfer.exporters.triton_config import CPU_BACKENDS, KINDS, PYTHON_RUNTIMES, TritonOptions

_D = TritonOptions  # the defaults live on the options record, said once


@click.group("export")
def export() -> None:
    """Export artifacts to other serving systems."""


@export.command("triton")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--repo", required=True, type=click.Path(path_type=Path),
              help="The model repository to write into (created when missing); other models in it are left alone.")
@click.option("--kind", type=click.Choice(KINDS),
              help="Node kind the models run on [default: gpu for an artifact with a plan, else cpu].")
@click.option("--cpu-backend", default=_D.cpu_backend, show_default=True, type=click.Choice(CPU_BACKENDS),
              help="How CPU nodes run the classifier. auto: ONNX Runtime, FP16/INT8 through its OpenVINO execution "
                   "accelerator (x86-64 containers); onnxruntime: the plain CPU provider (aarch64); "
                   "onnxruntime-openvino: the accelerator for every precision; openvino: Triton's OpenVINO backend, "
                   "whose batch padding fails batches formed from several requests (openvino_backend bug, unfixed; "
                   "docs/scale-out.md); python: the Python backend running the ONNX with --python-runtime.")
@click.option("--python-runtime", default=_D.python_runtime, show_default=True, type=click.Choice(PYTHON_RUNTIMES),
              help="The Python API the --cpu-backend python classifier runs the ONNX with.")
@click.option("--python-path", metavar="DIR",
              help="A site-packages folder inside the Triton container holding the runtime (and Pillow), appended "
                   "to the Python-backend models' sys.path (after the stub's own numpy).")
@click.option("--engine-cache-dir", default=_D.engine_cache_dir, show_default=True, metavar="DIR",
              help="Where ONNX Runtime's TensorRT accelerator caches engines on GPU nodes, one folder per ONNX "
                   "sha256; mount a persistent volume there.")
@click.option("--max-batch-size", type=click.IntRange(1, 1 << 20),
              help="Triton's max_batch_size for ONNX and Python-backend models [default: 32; 8 on --cpu-backend "
                   "openvino, whose backend pads every batch to it]; a plan's profiles set its own.")
@click.option("--instances", default=_D.instances, show_default=True, type=click.IntRange(1, 256),
              help="Model instances per node (instance_group count).")
@click.option("--max-queue-delay-us", default=_D.max_queue_delay_us, show_default=True, type=click.IntRange(0),
              help="How long Triton's dynamic batcher waits to fill a batch.")
@click.option("--with-preprocess", is_flag=True,
              help="Also write <name>_preprocess (Python backend) and the ensemble <name>_image taking image bytes.")
@click.option("--preprocess-instances", default=_D.preprocess_instances, show_default=True,
              type=click.IntRange(1, 256), help="Instances of the preprocessing model (CPU).")
@click.option("--python-env", type=click.Path(dir_okay=False),
              help="A conda-pack archive (.tar.gz) with numpy and Pillow, copied into the preprocessing model and "
                   "named by its EXECUTION_ENV_PATH (or build a Triton image with Pillow: docs/scale-out.md).")
@click.option("--force", is_flag=True, help="Replace model folders of the same names.")
def triton(artifacts: tuple[Path, ...], repo: Path, kind: str | None, cpu_backend: str, python_runtime: str,
           python_path: str | None, engine_cache_dir: str, max_batch_size: int | None, instances: int,
           max_queue_delay_us: int, with_preprocess: bool, preprocess_instances: int, python_env: str | None,
           force: bool) -> None:
    """Write ARTIFACTS as models of the Triton model repository --repo (config.pbtxt, model files, labels)."""
    from trtinfer.exporters.triton_repo import export_triton

    options = TritonOptions(kind=kind, cpu_backend=cpu_backend, python_runtime=python_runtime,
                            python_path=python_path, engine_cache_dir=engine_cache_dir,
                            max_batch_size=max_batch_size, instances=instances,
                            max_queue_delay_us=max_queue_delay_us, with_preprocess=with_preprocess,
                            preprocess_instances=preprocess_instances, python_env=python_env, force=force)
    models = export_triton(artifacts, repo, options, report=lambda m: click.echo(m, err=True))
    for model in models:
        click.echo(f"{repo / model.name}: {model.platform} on {model.kind.upper()} nodes ({', '.join(model.files)})")
    click.echo(f"run it: tritonserver --model-repository={repo.resolve()}  (docs/scale-out.md)")
