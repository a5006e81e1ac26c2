#!/usr/bin/env bash
# Provision MovieLens-100K (RecBole atomic files: ml-100k.inter/.item/.user) under .cache/data/ml-100k.
# It ships inside the recbole==1.2.1 wheel on PyPI; the dataset's licence forbids redistribution,
# so it is fetched on demand and never committed. Prints the directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${ML100K_DIR:-$ROOT/.cache/data/ml-100k}
if [ -f "$DEST/ml-100k.inter" ]; then echo "$DEST"; exit 0; fi
WHEELS=$ROOT/.cache/wheels
mkdir -p "$WHEELS" "$DEST"
PY=${PYTHON:-python3}
if ! ls "$WHEELS"/recbole-1.2.1-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps -d "$WHEELS" recbole==1.2.1 >&2
fi
"$PY" - "$WHEELS" "$DEST" <<'PY'
import glob, os, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
whl = sorted(glob.glob(os.path.join(wheels, "recbole-1.2.1-*.whl")))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith("recbole/dataset_example/ml-100k/") and not name.endswith("/"):
            with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                out.write(src.read())
PY
echo "$DEST"
