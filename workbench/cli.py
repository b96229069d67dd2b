"""The ``workbench`` command line."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from workbench.config import ConfigError, load_config

app = typer.Typer(
    help="DianaChat Workbench: compare LLM strategies for LiveKit voice agents on embedded models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
serve_app = typer.Typer(help="Run workbench-managed services in the foreground.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
console = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $WORKBENCH_CONFIG, else the embedded default)."),
]


def _config(path: Path | None):
    try:
        return load_config(path)
    except ConfigError as e:
        console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from e


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Load every model, run one tiny real inference each, and report what works.

    Exits non-zero and names the package to install when something is missing.
    """
    from workbench.models import ModelStack
    from workbench.models.doctor import doctor as run_doctor

    loading = console.status("loading models and running one inference each...")
    with loading, ModelStack(_config(config)) as stack:
        checks = run_doctor(stack)
    table = Table(title="DianaChat Workbench doctor")
    for col in ("component", "model", "load", "latency", "status"):
        table.add_column(col)
    for c in checks:
        load = f"{c.load_s:.2f} s" if c.load_s is not None else "-"
        status = "[green]OK[/green]" if c.ok else f"[red]{c.status}[/red]: {c.detail}"
        table.add_row(c.component, c.model, load, c.metric, status)
    console.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        console.print(f"[red]{len(bad)} component(s) not working:[/red] " + ", ".join(c.component for c in bad))
        raise typer.Exit(1)


@serve_app.command("llm")
def serve_llm(
    config: ConfigOpt = None,
    endpoint: Annotated[str, typer.Option(help="Endpoint name from the config ('default' is `llm`).")] = "default",
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Serve the local GGUF model as an OpenAI-compatible endpoint until Ctrl-C (restarts it if it dies)."""
    from workbench.models.llm_server import LocalLLMServer

    cfg = _config(config)
    ep = cfg.endpoint(endpoint)
    if ep.kind != "local":
        console.print(f"[red]endpoint {endpoint!r} is kind {ep.kind!r}; only 'local' endpoints are served here[/red]")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = LocalLLMServer(ep, log_dir=cfg.state_dir / "logs", port=port)
    info = server.start()
    console.print(
        f"serving [bold]{info.model}[/bold] at [bold]{info.base_url}[/bold] (pid {info.pid}); log: {info.log_path}"
    )
    console.print("use it with: base_url=" + info.base_url + f"  model={info.model}  (Ctrl-C to stop)")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        console.print("stopped")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
