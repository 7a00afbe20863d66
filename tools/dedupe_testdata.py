"""Replace tracked test-data files that are byte-identical to another one
with relative symlinks to the first (in git ls-files order), so the working
tree stays small (a GPU test machine may take at most 64 MiB of it).
weights.Store.AddDir follows such links. Run after regenerating test data:
    python3 tools/dedupe_testdata.py
"""
import collections
import hashlib
import os
import subprocess

root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
files = subprocess.run(["git", "ls-files", "*/testdata/*"], capture_output=True, text=True, cwd=root, check=True).stdout.split("\n")
groups = collections.defaultdict(list)
for f in files:
    p = os.path.join(root, f)
    if f and os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) >= 100_000:
        with open(p, "rb") as fh:
            groups[hashlib.sha256(fh.read()).hexdigest()].append(f)
for same in groups.values():
    for f in same[1:]:
        p = os.path.join(root, f)
        os.remove(p)
        os.symlink(os.path.relpath(os.path.join(root, same[0]), os.path.dirname(p)), p)
        print(f, "->", same[0])
