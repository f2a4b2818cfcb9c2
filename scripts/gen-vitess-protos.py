#!/usr/bin/env python3
"""Write our Vitess-compatible .proto files from the Vitess wire-facts table.

The facts table (proto/wirefacts/vitess-v0.24.4.tsv, from scripts/gen-wire-facts.py) holds only
names, numbers, labels and types of Vitess's protobuf schema. This script picks
the services and messages vtorc-rs uses, closes the set over field and method
types, and prints proto3 text for them: one file per Vitess package, every
message complete (so records we read, change and write back lose nothing).

Usage: scripts/gen-vitess-protos.py FACTS.tsv OUT_DIR
"""
import collections
import os
import sys

# The services we serve or call, and the methods of each that we use.
SERVICES = {
    "tabletmanagerservice.TabletManager": [
        "Ping", "GetGlobalStatusVars", "SetReadOnly", "SetReadWrite", "ChangeType",
        "RefreshState", "ReplicationStatus", "PrimaryStatus", "PrimaryPosition",
        "WaitForPosition", "StopReplication", "StopReplicationMinimum", "StartReplication",
        "RestartReplication", "ResetReplication", "InitPrimary", "PopulateReparentJournal",
        "ReadReparentJournalInfo", "InitReplica", "DemotePrimary", "UndoDemotePrimary",
        "ReplicaWasPromoted", "ResetReplicationParameters", "FullStatus",
        "SetReplicationSource", "ReplicaWasRestarted", "StopReplicationAndGetStatus",
        "PromoteReplica", "RunHealthCheck",
    ],
    "queryservice.Query": ["StreamHealth"],
    "vtctlservice.Vtctld": [
        "PlannedReparentShard", "EmergencyReparentShard", "GetTablet", "GetTablets",
        "GetShard", "GetKeyspace", "GetKeyspaces", "GetCellInfoNames", "GetCellInfo",
        "GetFullStatus", "SetVtorcEmergencyReparent",
        # What VTAdmin's keyspace, shard and tablet pages and actions call.
        "FindAllShardsInKeyspace", "ShardReplicationPositions", "GetCellsAliases",
        "GetSrvKeyspaces", "PingTablet", "RefreshState", "RunHealthCheck", "SetWritable",
        "StartReplication", "StopReplication", "ReparentTablet", "TabletExternallyReparented",
    ],
}

# Records we store or decode outside any service, always included whole.
EXTRA_TYPES = [
    "topodata.Tablet", "topodata.Shard", "topodata.Keyspace", "topodata.ShardReplication",
    "topodata.CellInfo", "topodata.CellsAlias", "topodata.SrvKeyspace",
    "vtorcdata.Keyspace", "vtorcdata.Shard", "vtorcdata.PrimaryHealthState",
    "vtorcdata.PrimaryHealthEvent", "logutil.Event", "vtrpc.RPCError",
]


def load(path):
    messages, enums, fields, reserved, values, rpcs, files = {}, {}, collections.defaultdict(list), \
        collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(dict), {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            row = line.rstrip("\n").split("\t")
            kind = row[0]
            if kind == "message":
                messages[row[1]] = row[2]
            elif kind == "enum":
                enums[row[1]] = row[2]
            elif kind == "field":
                fields[row[1]].append(row[2:])
            elif kind == "reserved":
                reserved[row[1]].append(row[2])
            elif kind == "value":
                values[row[1]].append((row[2], int(row[3])))
            elif kind == "rpc":
                rpcs[row[1]][row[2]] = row[3:]
            elif kind == "service":
                files[row[1]] = row[2]
    return messages, enums, fields, reserved, values, rpcs, files


def main():
    facts, out = sys.argv[1], sys.argv[2]
    messages, enums, fields, reserved, values, rpcs, service_files = load(facts)

    def refs_of_type(t):
        if t.startswith("map<"):
            return [x for x in t[4:-1].split(",") if x.startswith(".")]
        return [t] if t.startswith(".") else []

    wanted, todo = set(), list(EXTRA_TYPES)
    for svc, methods in SERVICES.items():
        for m in methods:
            inp, outp = rpcs[svc][m][0], rpcs[svc][m][1]
            todo += [inp[1:], outp[1:]]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        if name not in messages and name not in enums:
            sys.exit(f"unknown type {name}")
        wanted.add(name)
        # a nested type needs its parent
        parent = name.rsplit(".", 1)[0]
        if parent in messages:
            todo.append(parent)
        for fld in fields.get(name, []):
            todo += [r[1:] for r in refs_of_type(fld[3])]

    def file_of(name):
        return messages.get(name) or enums.get(name)

    by_file = collections.defaultdict(list)
    for name in wanted:
        parent = name.rsplit(".", 1)[0]
        if parent not in messages:  # top level
            by_file[file_of(name)].append(name)
    for svc in SERVICES:
        by_file[service_files[svc]]
    children = collections.defaultdict(list)
    for name in wanted:
        parent = name.rsplit(".", 1)[0]
        if parent in messages:
            children[parent].append(name)

    def pkg_of_file(fname):
        return fname[:-len(".proto")]

    def tref(t, pkg):
        """Print a type reference: bare within its own package, else pkg.Name."""
        if t.startswith("map<"):
            k, v = t[4:-1].split(",")
            return f"map<{k}, {tref(v, pkg)}>"
        if not t.startswith("."):
            return t
        tpkg, rest = t[1:].split(".", 1)
        return rest if tpkg == pkg else t[1:]

    def emit_enum(name, ind):
        lines = [f"{ind}enum {name.rsplit('.', 1)[1]} {{"]
        nums = [n for _, n in values[name]]
        if len(nums) != len(set(nums)):
            lines.append(f"{ind}  option allow_alias = true;")
        for vname, num in values[name]:
            lines.append(f"{ind}  {vname} = {num};")
        lines.append(f"{ind}}}")
        return lines

    def emit_message(name, ind):
        pkg = name.split(".", 1)[0]
        lines = [f"{ind}message {name.rsplit('.', 1)[1]} {{"]
        for child in sorted(children.get(name, [])):
            lines += emit_enum(child, ind + "  ") if child in enums else emit_message(child, ind + "  ")
        for r in reserved.get(name, []):
            if r.startswith("name:"):
                lines.append(f'{ind}  reserved "{r[5:]}";')
            else:
                lo, hi = r.split("-")
                lines.append(f"{ind}  reserved {lo if lo == hi else lo + ' to ' + hi};")
        oneofs = collections.OrderedDict()
        plain = []
        for fname, num, label, ftype, oneof, p3opt in fields.get(name, []):
            if oneof:
                oneofs.setdefault(oneof, []).append((fname, num, ftype))
            else:
                plain.append((fname, num, label, ftype, p3opt))
        for fname, num, label, ftype, p3opt in plain:
            if label == "map":
                decl = tref(ftype, pkg)
            elif label == "repeated":
                decl = f"repeated {tref(ftype, pkg)}"
            elif p3opt == "true":
                decl = f"optional {tref(ftype, pkg)}"
            else:
                decl = tref(ftype, pkg)
            lines.append(f"{ind}  {decl} {fname} = {num};")
        for oneof, flds in oneofs.items():
            lines.append(f"{ind}  oneof {oneof} {{")
            for fname, num, ftype in flds:
                lines.append(f"{ind}    {tref(ftype, pkg)} {fname} = {num};")
            lines.append(f"{ind}  }}")
        lines.append(f"{ind}}}")
        return lines

    os.makedirs(out, exist_ok=True)
    for fname, names in sorted(by_file.items()):
        pkg = pkg_of_file(fname)
        body, imports = [], set()
        for name in sorted(names):
            body += (emit_enum(name, "") if name in enums else emit_message(name, "")) + [""]
        for name in wanted:
            if file_of(name) != fname:
                continue
            for fld in fields.get(name, []):
                for r in refs_of_type(fld[3]):
                    f2 = file_of(r[1:])
                    if f2 != fname:
                        imports.add(f2)
        for svc, methods in SERVICES.items():
            if service_files[svc] != fname:
                continue
            body.append(f"service {svc.split('.', 1)[1]} {{")
            for m in methods:
                inp, outp, cs, ss = rpcs[svc][m]
                for t in (inp, outp):
                    if file_of(t[1:]) != fname:
                        imports.add(file_of(t[1:]))
                cs = "stream " if cs == "true" else ""
                ss = "stream " if ss == "true" else ""
                body.append(f"  rpc {m}({cs}{tref(inp, pkg)}) returns ({ss}{tref(outp, pkg)});")
            body += ["}", ""]
        head = [
            "// Generated by scripts/gen-vitess-protos.py from the Vitess 24 wire facts",
            "// (names, numbers and types only). Do not edit by hand: change the script.",
            "//",
            f"// Package {pkg}: the subset of Vitess's {pkg} schema that vtorc-rs reads,",
            "// writes or serves, wire-identical to Vitess; every message is complete.",
            "",
            'syntax = "proto3";',
            "",
            f"package {pkg};",
            "",
        ]
        head += [f'import "vitess/{i}";' for i in sorted(imports)]
        if imports:
            head.append("")
        with open(os.path.join(out, fname), "w") as f:
            f.write("\n".join(head + body).rstrip() + "\n")
        print(f"wrote {fname}: {len(names)} top-level types", file=sys.stderr)


if __name__ == "__main__":
    main()
