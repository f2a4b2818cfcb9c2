#!/usr/bin/env python3
"""Regenerate proto/wirefacts/vitess-vX.Y.Z.tsv, the Vitess wire-facts table.

The table lists only facts of the Vitess protobuf schema (names, field
numbers, labels, types, oneofs, proto3 `optional`, reserved numbers, enum
values, rpc signatures) and no upstream text. tests/wire_compat.rs checks our
own proto/vitess/*.proto files against it.

Where the facts come from: the `.proto` files of the Vitess Go module at the
pinned version. The module is fetched with `go mod download` into Go's module
cache (outside this repository); nothing of Vitess is committed. protoc
compiles those files into a descriptor set, which is read with the Python
`google.protobuf` module.

Usage:
  scripts/gen-wire-facts.py                      # writes proto/wirefacts/vitess-v0.24.4.tsv
  scripts/gen-wire-facts.py --check              # exit 1 if the committed table is stale
  scripts/gen-wire-facts.py --version v0.24.5    # another module version
  scripts/gen-wire-facts.py --vitess-dir DIR     # use this module folder (skips go)

Needs: go (unless --vitess-dir), protoc, and Python's protobuf module
(scripts/setup.sh installs protoc and python3-protobuf).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

MODULE = "vitess.io/vitess"
DEFAULT_VERSION = "v0.24.4"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def die(msg):
    sys.stderr.write("gen-wire-facts: error: %s\n" % msg)
    sys.exit(2)


def import_descriptor_pb2():
    try:
        from google.protobuf import descriptor_pb2
        return descriptor_pb2
    except ImportError:
        pass
    # The Debian package python3-protobuf lives under the system interpreter;
    # a pyenv/venv `python3` first on PATH may lack it. Retry there once.
    system = "/usr/bin/python3"
    if (os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
            and not os.environ.get("GEN_WIRE_FACTS_REEXEC")):
        os.environ["GEN_WIRE_FACTS_REEXEC"] = "1"
        os.execv(system, [system] + sys.argv)
    die("the Python module google.protobuf is missing; run scripts/setup.sh "
        "or 'apt-get install -y python3-protobuf' (or 'pip install protobuf')")


def module_dir(version):
    """Download the Vitess module with go (no-op when cached); return its folder."""
    go = shutil.which("go")
    if not go:
        die("go is not installed; it is needed to fetch %s@%s "
            "(or pass --vitess-dir with the module's folder)" % (MODULE, version))
    # Outside any module, so this repository's state does not matter.
    with tempfile.TemporaryDirectory(prefix="wirefacts-go.") as tmp:
        env = dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="on")
        try:
            res = subprocess.run([go, "mod", "download", "-json", "%s@%s" % (MODULE, version)],
                                 cwd=tmp, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, universal_newlines=True)
        except OSError as exc:
            die("could not run go (%s): %s" % (go, exc))
    try:
        info = json.loads(res.stdout) if res.stdout.strip() else {}
    except ValueError:
        info = {}
    if res.returncode != 0 or not info.get("Dir") or info.get("Error"):
        die("go mod download %s@%s failed: %s" % (
            MODULE, version, (info.get("Error") or res.stderr or res.stdout).strip()))
    return info["Dir"], info.get("Sum", "")


def compile_set(proto_dir):
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    if not protoc:
        die("protoc not found (PATH or $PROTOC); install it with scripts/setup.sh "
            "or 'apt-get install -y protobuf-compiler'")
    files = sorted(f for f in os.listdir(proto_dir) if f.endswith(".proto"))
    if not files:
        die("no .proto files in %s" % proto_dir)
    with tempfile.TemporaryDirectory(prefix="wirefacts.") as tmp:
        out = os.path.join(tmp, "upstream.pb")
        cmd = [protoc, "--include_imports", "--descriptor_set_out=" + out, "-I", proto_dir] + files
        try:
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 universal_newlines=True)
        except OSError as exc:
            die("could not run protoc (%s): %s" % (protoc, exc))
        if res.returncode != 0:
            die("protoc failed on %s:\n%s" % (proto_dir, res.stderr.strip()))
        with open(out, "rb") as fh:
            return fh.read(), files


SCALAR_NAMES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
    7: "fixed32", 8: "bool", 9: "string", 10: "group", 12: "bytes", 13: "uint32",
    15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64",
}
T_MESSAGE, T_ENUM, L_REPEATED = 11, 14, 3


def type_of(field):
    if field.type in (T_MESSAGE, T_ENUM):
        return field.type_name
    return SCALAR_NAMES.get(field.type, "type%d" % field.type)


def facts_rows(fds):
    """Yield the table rows (lists of columns) for every non-google file."""
    entries = {}  # ".pkg.Msg.FooEntry" -> (key field, value field)

    def scan(msg, scope):
        name = "%s.%s" % (scope, msg.name)
        if msg.options.map_entry:
            by = {f.name: f for f in msg.field}
            entries[name] = (by["key"], by["value"])
        for nested in msg.nested_type:
            scan(nested, name)

    for fd in fds.file:
        for msg in fd.message_type:
            scan(msg, "." + fd.package if fd.package else "")

    messages, enums, services = [], [], []

    def add_enum(en, prefix, fname):
        enums.append((prefix + en.name, fname, [(v.name, v.number) for v in en.value]))

    def add_message(msg, prefix, fname):
        if msg.options.map_entry:
            return
        full = prefix + msg.name
        rows = []
        for f in msg.field:
            label = "repeated" if f.label == L_REPEATED else "optional"
            ty = type_of(f)
            if label == "repeated" and f.type == T_MESSAGE and f.type_name in entries:
                k, v = entries[f.type_name]
                label, ty = "map", "map<%s,%s>" % (type_of(k), type_of(v))
            synthetic = bool(f.proto3_optional)
            oneof = ""
            if f.HasField("oneof_index") and not synthetic:
                oneof = msg.oneof_decl[f.oneof_index].name
            rows.append(["field", full, f.name, str(f.number), label, ty, oneof,
                         "true" if synthetic else "false"])
        for r in msg.reserved_range:
            rows.append(["reserved", full, "%d-%d" % (r.start, r.end - 1)])
        for n in sorted(msg.reserved_name):
            rows.append(["reserved", full, "name:" + n])
        messages.append((full, fname, rows))
        for nested in msg.nested_type:
            add_message(nested, full + ".", fname)
        for en in msg.enum_type:
            add_enum(en, full + ".", fname)

    for fd in fds.file:
        if fd.name.startswith("google/protobuf/"):
            continue
        prefix = fd.package + "." if fd.package else ""
        for msg in fd.message_type:
            add_message(msg, prefix, fd.name)
        for en in fd.enum_type:
            add_enum(en, prefix, fd.name)
        for svc in fd.service:
            rpcs = [["rpc", prefix + svc.name, m.name, m.input_type, m.output_type,
                     "true" if m.client_streaming else "false",
                     "true" if m.server_streaming else "false"] for m in svc.method]
            services.append((prefix + svc.name, fd.name, rpcs))

    for name, fname, rows in sorted(messages):
        yield ["message", name, fname]
        yield from rows
    for name, fname, values in sorted(enums):
        yield ["enum", name, fname]
        for vname, num in values:
            yield ["value", name, vname, str(num)]
    for name, fname, rpcs in sorted(services):
        yield ["service", name, fname]
        yield from rpcs


def render(rows, version, module_sum, files):
    head = [
        "# Vitess wire facts, generated by scripts/gen-wire-facts.py; do not edit by hand.",
        "# source: %s %s%s" % (MODULE, version, (" (%s)" % module_sum) if module_sum else ""),
        "# files: %s" % " ".join(files),
        "# Facts only (names, numbers, labels, types); no upstream text or comments.",
        "# Rows are tab-separated; the first column is the kind:",
        "#   message   NAME     FILE",
        "#   field     MESSAGE  NAME  NUMBER  LABEL  TYPE  ONEOF  PROTO3_OPTIONAL",
        "#             LABEL is optional, repeated or map; TYPE is a scalar, .pkg.Type",
        "#             or map<K,V> (map entry messages are not listed).",
        "#   reserved  MESSAGE  FROM-TO | name:NAME",
        "#   enum      NAME     FILE",
        "#   value     ENUM     NAME  NUMBER",
        "#   service   NAME     FILE",
        "#   rpc       SERVICE  METHOD  INPUT  OUTPUT  CLIENT_STREAMING  SERVER_STREAMING",
    ]
    return "\n".join(head + ["\t".join(r) for r in rows]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=os.environ.get("VITESS_VERSION", DEFAULT_VERSION),
                    help="Go module version of vitess.io/vitess (default %(default)s)")
    ap.add_argument("--vitess-dir", help="the module folder (holding proto/); skips go")
    ap.add_argument("--out", help="output (default proto/wirefacts/vitess-VERSION.tsv)")
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed table instead of writing it")
    args = ap.parse_args()

    descriptor_pb2 = import_descriptor_pb2()
    if args.vitess_dir:
        vdir, module_sum = args.vitess_dir, ""
    else:
        vdir, module_sum = module_dir(args.version)
    proto_dir = os.path.join(vdir, "proto")
    if not os.path.isdir(proto_dir):
        die("%s has no proto/ folder" % vdir)
    data, files = compile_set(proto_dir)
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(data)
    rows = list(facts_rows(fds))
    text = render(rows, args.version, module_sum, files)

    out = args.out or os.path.join(REPO, "proto", "wirefacts", "vitess-%s.tsv" % args.version)
    if args.check:
        try:
            with open(out, encoding="utf-8") as fh:
                current = fh.read()
        except OSError as exc:
            die("cannot read %s: %s" % (out, exc))
        if current != text:
            sys.stderr.write("gen-wire-facts: %s is stale; rerun scripts/gen-wire-facts.py\n" % out)
            return 1
        print("gen-wire-facts: %s is up to date" % os.path.relpath(out, REPO))
        return 0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print("gen-wire-facts: wrote %s (%d rows from %d files)" % (
        os.path.relpath(out, REPO), len(rows), len(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
