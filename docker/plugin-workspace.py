#!/usr/bin/env python3
"""Writes the build context's Cargo workspace: the repository's Cargo.toml with the plugin as
its only member and only the [workspace.dependencies] the plugin uses; everything else (package
fields, lints, profiles) as it is. docker/build.sh then lets cargo prune Cargo.lock to that
workspace, keeping every locked version. The image's dependency layer then changes only when
the plugin's own dependencies do, not whenever another member's do.

    plugin-workspace.py REPO_ROOT OUT_DIR
"""

import os
import re
import sys
import tomllib


def plugin_dependency_names(plugin_manifest):
    names = set()
    for section in ("dependencies", "dev-dependencies", "build-dependencies"):
        for name, spec in plugin_manifest.get(section, {}).items():
            if isinstance(spec, dict) and spec.get("workspace"):
                names.add(name)
    return names


def main():
    root, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        workspace = tomllib.load(f)
    with open(os.path.join(root, "gst-plugin", "Cargo.toml"), "rb") as f:
        keep = plugin_dependency_names(tomllib.load(f))

    lines = open(os.path.join(root, "Cargo.toml")).read().splitlines(keepends=True)
    result, section, entry, depth = [], None, [], 0
    for line in lines:
        stripped = line.strip()
        if depth == 0 and re.match(r"^\[[^\]]+\]$", stripped):
            section = stripped[1:-1].strip()
        if section == "workspace" and re.match(r"^members\s*=", stripped):
            result.append('members = ["gst-plugin"]\n')
            continue
        if section != "workspace.dependencies" or stripped.startswith("["):
            result.append(line)
            continue
        # One dependency may span lines: gather until brackets balance.
        if depth == 0 and (not stripped or stripped.startswith("#")):
            continue
        entry.append(line)
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
        if depth == 0:
            name = re.match(r"^\s*([A-Za-z0-9_-]+)\s*=", entry[0]).group(1)
            if name in keep:
                result.extend(entry)
            entry = []
    text = "".join(result)

    # The result must be the same workspace, less the other members' dependencies.
    written = tomllib.loads(text)
    expected = {k: v for k, v in workspace["workspace"]["dependencies"].items() if k in keep}
    if written["workspace"]["dependencies"] != expected or written["workspace"]["members"] != ["gst-plugin"]:
        sys.exit("plugin-workspace: the trimmed Cargo.toml does not match the original's dependencies")
    missing = keep - set(expected)
    if missing:
        sys.exit(f"plugin-workspace: not in [workspace.dependencies]: {sorted(missing)}")
    for k in set(workspace) - {"workspace"}:
        if written.get(k) != workspace[k]:
            sys.exit(f"plugin-workspace: section [{k}] differs")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "Cargo.toml"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
