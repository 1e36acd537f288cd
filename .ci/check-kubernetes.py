#!/usr/bin/env python3
"""Checks examples/kubernetes/*.yaml: valid YAML, and the properties its README promises.

- every document parses and has apiVersion, kind and metadata.name;
- each Deployment's container runs relaunch as its first process (command[0]), and its exec
  readiness and liveness probes run `relaunch status` with the same --name;
- terminationGracePeriodSeconds is above relaunch's --stop-wait-secs;
- the --env-file lies in a volume from a ConfigMap of the same file set, mounted without
  subPath (so the kubelet updates it in place), and the ConfigMap holds that key with
  KEY=VALUE lines.
Needs PyYAML. Prints one line per file; exit 0 when all hold.
"""
import glob
import os
import re
import sys

import yaml

ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def duration_secs(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    if not m:
        raise ValueError(f"cannot read --stop-wait-secs {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def flag(command, name):
    if name in command:
        return command[command.index(name) + 1]
    for arg in command:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def check(path):
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d is not None]
    for d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            assert key in d, f"a document without {key}"
        assert d["metadata"].get("name"), f"a {d['kind']} without metadata.name"
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(), \
            "the selector does not match the pod labels"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            command = [str(a) for a in c["command"]]
            assert os.path.basename(command[0]) == "relaunch", f"{c['name']}: command[0] is not relaunch"
            assert "--" in command, f"{c['name']}: no -- before the server's command"
            opts = command[: command.index("--")]
            name = flag(opts, "--name")
            assert name, f"{c['name']}: relaunch without --name (the probes need it)"
            for probe in ("readinessProbe", "livenessProbe"):
                exec_cmd = c[probe]["exec"]["command"]
                assert os.path.basename(exec_cmd[0]) == "relaunch" and exec_cmd[1] == "status", \
                    f"{probe} does not run relaunch status"
                assert flag(exec_cmd, "--name") == name, f"{probe} asks for another --name"
            wait = duration_secs(flag(opts, "--stop-wait-secs") or "10")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            assert grace > wait, f"terminationGracePeriodSeconds {grace} is not above --stop-wait-secs {wait}"
            env_file = flag(opts, "--env-file")
            if env_file:
                mount = next((m for m in c.get("volumeMounts", [])
                              if env_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
                assert mount, f"--env-file {env_file} is in no volume"
                assert "subPath" not in mount, "a subPath mount is never updated in place"
                cm_name = volumes[mount["name"]]["configMap"]["name"]
                key = os.path.relpath(env_file, mount["mountPath"])
                data = config_maps[cm_name]["data"]
                assert key in data, f"ConfigMap {cm_name} has no key {key}"
                for n, line in enumerate(data[key].splitlines(), 1):
                    if line.strip() and not line.startswith("#"):
                        assert ENV_LINE.match(line), f"{cm_name}/{key}:{n}: not KEY=VALUE: {line!r}"
    assert deployments, "no Deployment"
    return f"{len(docs)} documents, {len(deployments)} deployment(s)"


failed = False
for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "kubernetes", "*.yaml"))):
    name = os.path.relpath(path, os.path.join(os.path.dirname(__file__), ".."))
    try:
        print(f"ok   {name}: {check(path)}")
    except (AssertionError, KeyError, ValueError, yaml.YAMLError) as e:
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        failed = True
sys.exit(1 if failed else 0)
