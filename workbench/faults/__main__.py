"""``python -m workbench.faults``: a scripted OpenAI-compatible endpoint in its own process (prints its URL).

Used by :class:`~workbench.faults.endpoint.EndpointProcess` so benchmarks measure against an
endpoint that does not share their GIL.
"""

from __future__ import annotations

import argparse
import asyncio

from workbench.faults.endpoint import Script, ScriptedEndpoint


def main() -> None:
    ap = argparse.ArgumentParser(description="A scripted OpenAI-compatible endpoint on 127.0.0.1 (prints its URL).")
    ap.add_argument("--text", default="Sure.")
    ap.add_argument("--ttft", type=float, default=0.0)
    ap.add_argument("--gap", type=float, default=0.0)
    a = ap.parse_args()

    async def serve() -> None:
        ep = await ScriptedEndpoint(Script(text=a.text, ttft_s=a.ttft, gap_s=a.gap)).start()
        print(ep.base_url, flush=True)
        while True:
            await asyncio.sleep(3600)
            ep.reset()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
