"""Generates the Python protobuf and gRPC code from protos/ (the only way it is made).

Run from anywhere: `python scripts/gen_protos.py`. With --check it generates into a temporary
folder and fails if the committed files differ (lines naming the generator's version aside).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILES = sorted(p.relative_to(ROOT) for p in (ROOT / "protos").rglob("*.proto"))
_VERSION_LINE = re.compile(r"Protobuf Python Version|_runtime_version\.ValidateProtobufRuntimeVersion|"
                           r"GRPC_GENERATED_VERSION = |^\s*\d+,\s*$|^\s*'',?\s*$")


def generate(out_dir: Path) -> list[Path]:
    include = Path(protoc.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *map(str, PROTO_FILES)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*_pb2*.py*"))


def _comparable(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not _VERSION_LINE.search(line)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = generate(Path(tmp))
        if args.check:
            stale = [str(p) for p in made
                     if not (ROOT / p).is_file()
                     or (not filecmp.cmp(Path(tmp) / p, ROOT / p, shallow=False)
                         and _comparable(Path(tmp) / p) != _comparable(ROOT / p))]
            if stale:
                print("generated code is stale; run python scripts/gen_protos.py:", *stale, sep="\n  ")
                return 1
            return 0
        for path in made:
            shutil.copyfile(Path(tmp) / path, ROOT / path)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
