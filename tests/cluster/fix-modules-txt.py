#!/usr/bin/env python3
"""Go >= 1.17 reads package lines under a `# module => replacement` wildcard header as
packages of an unversioned module and refuses the go1.15-era vendor/modules.txt of
Kubernetes 1.20. Move each such package line under the versioned header before it."""
import sys

path = sys.argv[1]
blocks = []  # [header, lines, versioned]
for line in open(path).read().splitlines():
    if line.startswith("# "):
        left = line[2:].split(" => ")[0].split()
        blocks.append([line, [], len(left) == 2])
    else:
        blocks[-1][1].append(line)

last_versioned = None
for block in blocks:
    if block[2]:
        last_versioned = block
    elif last_versioned is not None:
        packages = [l for l in block[1] if not l.startswith("## ")]
        block[1] = [l for l in block[1] if l.startswith("## ")]
        last_versioned[1].extend(packages)

with open(path, "w") as out:
    for header, lines, _ in blocks:
        out.write(header + "\n")
        for l in lines:
            out.write(l + "\n")
