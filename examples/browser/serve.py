"""Serve the fill-mask page with a local export and transformers.js from a local node_modules, on loopback.

    python examples/browser/serve.py EXPORT_DIR [--node-modules DIR] [--port 8000]

then open http://127.0.0.1:8000/?dtype=q8 (dtype: fp32, q8, fp16, q4, q4f16, whichever the export has).
--node-modules defaults to .venv/js/node_modules, where ./scripts/test installs @huggingface/transformers.
A POST to /result (the page sends one with ?report=1) is printed as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


class Handler(http.server.SimpleHTTPRequestHandler):
    mounts: dict[str, Path] = {}
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix):
                target = (folder / path[len(prefix):]).resolve()
                if folder.resolve() in (target, *target.parents):
                    return str(target)
                return str(folder / "__outside__")  # no way out of a mount: a 404
        return str(HERE / "__missing__")

    def do_POST(self):  # noqa: N802 (http.server's naming)
        if self.path != "/result":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(json.dumps(json.loads(body)), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):  # quiet: stdout carries the results
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a folder written by `distilbert export`")
    parser.add_argument("--node-modules", type=Path, default=ROOT / ".venv" / "js" / "node_modules")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not (args.export / "config.json").is_file():
        parser.exit(2, f"error: {args.export} has no config.json; pass a folder written by `distilbert export`\n")
    if not (args.node_modules / "@huggingface" / "transformers").is_dir():
        parser.exit(2, f"error: no @huggingface/transformers in {args.node_modules}; run "
                       "`npm install --ignore-scripts @huggingface/transformers@4` there, or ./scripts/test\n")
    Handler.mounts = {"/node_modules/": args.node_modules, "/models/model/": args.export, "/": HERE}
    server = http.server.ThreadingHTTPServer((args.host, args.port), partial(Handler))
    print(f"serving on http://{args.host}:{server.server_address[1]}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
