//! Wire compatibility with Vitess: the descriptor set `build.rs` compiles
//! from `proto/` (exposed as [`vtorc::proto::FILE_DESCRIPTOR_SET`]) is
//! compared with the facts table `proto/wirefacts/vitess-v0.24.4.tsv`, which
//! `scripts/gen-wire-facts.py` makes from the `.proto` files of the Vitess Go
//! module at that version.
//!
//! Every message, enum and service of ours whose full name Vitess also has
//! must match it on the wire. Problems, one line each, tagged:
//!
//! - `[a]` a field whose number, type, label, oneof or proto3 `optional`
//!   presence is not upstream's;
//! - `[b]` a field name upstream lacks;
//! - `[c]` a field number upstream gives to another name, or reserves;
//! - `[d]` an enum value with another number, or one upstream lacks;
//! - `[e]` an rpc upstream lacks, or with other input/output/streaming;
//! - `[f]` an upstream field missing from a record we read and write back
//!   ([`COMPLETE`], and every message type reachable from their fields that
//!   we define), since prost drops unknown fields when it decodes;
//! - `[k]` a name that is a message on one side and an enum on the other.
//!
//! Names upstream lacks (our own `vtorc.*` API) are not checked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// The Vitess Go module version the facts table was generated from.
const VITESS_MODULE: &str = "vitess.io/vitess v0.24.4";
const FACTS: &str = "proto/wirefacts/vitess-v0.24.4.tsv";

/// Records that must define every upstream field (with what they reach).
const COMPLETE: &[&str] = &[
    "topodata.Tablet",
    "topodata.Shard",
    "topodata.Keyspace",
    "topodata.ShardReplication",
    "topodata.CellInfo",
    "vtctldata.PlannedReparentShardRequest",
    "vtctldata.EmergencyReparentShardRequest",
];

// ------------------------------------------------------------------ model

#[derive(Clone, Debug, PartialEq)]
struct Field {
    name: String,
    number: i32,
    /// `optional`, `repeated` or `map`.
    label: String,
    /// A scalar name, `.pkg.Type`, or `map<K,V>`.
    ty: String,
    /// The real oneof's name, or empty.
    oneof: String,
    proto3_optional: bool,
}

impl Field {
    fn show(&self) -> String {
        let mut s = String::new();
        if self.proto3_optional {
            s.push_str("optional ");
        }
        if self.label == "repeated" {
            s.push_str("repeated ");
        }
        write!(s, "{} {} = {}", self.ty, self.name, self.number).expect("write to String");
        if !self.oneof.is_empty() {
            write!(s, " (oneof {})", self.oneof).expect("write to String");
        }
        s
    }
}

#[derive(Clone, Debug, Default)]
struct Msg {
    fields: Vec<Field>,
    /// Inclusive number ranges.
    reserved: Vec<(i32, i32)>,
    reserved_names: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct Rpc {
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// The wire facts of a schema, keyed by full name without a leading dot.
#[derive(Clone, Debug, Default)]
struct Schema {
    messages: BTreeMap<String, Msg>,
    enums: BTreeMap<String, Vec<(String, i32)>>,
    services: BTreeMap<String, BTreeMap<String, Rpc>>,
}

fn scalar_name(t: Type) -> String {
    t.as_str_name().trim_start_matches("TYPE_").to_ascii_lowercase()
}

impl Schema {
    /// Our schema, from the descriptor set the crate embeds.
    fn ours() -> Schema {
        let set = FileDescriptorSet::decode(vtorc::proto::FILE_DESCRIPTOR_SET)
            .expect("vtorc::proto::FILE_DESCRIPTOR_SET decodes as a FileDescriptorSet");
        Schema::from_descriptors(&set)
    }

    fn from_descriptors(set: &FileDescriptorSet) -> Schema {
        // Map entry types, by ".pkg.Msg.FooEntry", to render map fields.
        let mut entries = BTreeMap::new();
        fn scan(m: &DescriptorProto, scope: &str, out: &mut BTreeMap<String, (Field, Field)>) {
            let full = format!("{scope}.{}", m.name());
            if m.options.as_ref().is_some_and(|o| o.map_entry()) {
                let pick = |n: &str| {
                    let f = m
                        .field
                        .iter()
                        .find(|f| f.name() == n)
                        .expect("map entry has key and value");
                    field_of(m, f, &BTreeMap::new())
                };
                out.insert(full.clone(), (pick("key"), pick("value")));
            }
            for n in &m.nested_type {
                scan(n, &full, out);
            }
        }
        for file in &set.file {
            let scope = if file.package().is_empty() {
                String::new()
            } else {
                format!(".{}", file.package())
            };
            for m in &file.message_type {
                scan(m, &scope, &mut entries);
            }
        }

        let mut s = Schema::default();
        for file in &set.file {
            if file.name().starts_with("google/protobuf/") {
                continue;
            }
            let prefix = if file.package().is_empty() {
                String::new()
            } else {
                format!("{}.", file.package())
            };
            for m in &file.message_type {
                s.add_message(m, &prefix, &entries);
            }
            for e in &file.enum_type {
                s.add_enum(e, &prefix);
            }
            for svc in &file.service {
                let methods = svc
                    .method
                    .iter()
                    .map(|m| {
                        let rpc = Rpc {
                            input: m.input_type().to_string(),
                            output: m.output_type().to_string(),
                            client_streaming: m.client_streaming(),
                            server_streaming: m.server_streaming(),
                        };
                        (m.name().to_string(), rpc)
                    })
                    .collect();
                s.services.insert(format!("{prefix}{}", svc.name()), methods);
            }
        }
        s
    }

    fn add_message(&mut self, m: &DescriptorProto, prefix: &str, entries: &BTreeMap<String, (Field, Field)>) {
        if m.options.as_ref().is_some_and(|o| o.map_entry()) {
            return;
        }
        let full = format!("{prefix}{}", m.name());
        let msg = Msg {
            fields: m.field.iter().map(|f| field_of(m, f, entries)).collect(),
            // Descriptor ranges are end-exclusive.
            reserved: m
                .reserved_range
                .iter()
                .map(|r| (r.start(), r.end() - 1))
                .collect(),
            reserved_names: m.reserved_name.iter().cloned().collect(),
        };
        self.messages.insert(full.clone(), msg);
        let nested_prefix = format!("{full}.");
        for n in &m.nested_type {
            self.add_message(n, &nested_prefix, entries);
        }
        for e in &m.enum_type {
            self.add_enum(e, &nested_prefix);
        }
    }

    fn add_enum(&mut self, e: &EnumDescriptorProto, prefix: &str) {
        let values = e
            .value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        self.enums.insert(format!("{prefix}{}", e.name()), values);
    }

    /// The upstream schema, from the facts table.
    fn from_table(text: &str) -> Result<Schema, String> {
        let mut s = Schema::default();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("{FACTS}:{}: {why}: {line:?}", i + 1);
            let c: Vec<&str> = line.split('\t').collect();
            let want = |n: usize| {
                if c.len() == n {
                    Ok(())
                } else {
                    Err(bad(&format!("expected {n} columns")))
                }
            };
            let num = |v: &str| v.parse::<i32>().map_err(|_| bad("not a number"));
            let flag = |v: &str| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad("not true/false")),
            };
            match c[0] {
                "message" => {
                    want(3)?;
                    s.messages.insert(c[1].to_string(), Msg::default());
                }
                "field" => {
                    want(8)?;
                    let field = Field {
                        name: c[2].to_string(),
                        number: num(c[3])?,
                        label: c[4].to_string(),
                        ty: c[5].to_string(),
                        oneof: c[6].to_string(),
                        proto3_optional: flag(c[7])?,
                    };
                    s.messages
                        .get_mut(c[1])
                        .ok_or_else(|| bad("field before its message"))?
                        .fields
                        .push(field);
                }
                "reserved" => {
                    want(3)?;
                    let msg = s
                        .messages
                        .get_mut(c[1])
                        .ok_or_else(|| bad("reserved before its message"))?;
                    if let Some(name) = c[2].strip_prefix("name:") {
                        msg.reserved_names.insert(name.to_string());
                    } else {
                        let (lo, hi) = c[2].split_once('-').ok_or_else(|| bad("not FROM-TO"))?;
                        msg.reserved.push((num(lo)?, num(hi)?));
                    }
                }
                "enum" => {
                    want(3)?;
                    s.enums.insert(c[1].to_string(), Vec::new());
                }
                "value" => {
                    want(4)?;
                    let v = (c[2].to_string(), num(c[3])?);
                    s.enums
                        .get_mut(c[1])
                        .ok_or_else(|| bad("value before its enum"))?
                        .push(v);
                }
                "service" => {
                    want(3)?;
                    s.services.insert(c[1].to_string(), BTreeMap::new());
                }
                "rpc" => {
                    want(7)?;
                    let rpc = Rpc {
                        input: c[3].to_string(),
                        output: c[4].to_string(),
                        client_streaming: flag(c[5])?,
                        server_streaming: flag(c[6])?,
                    };
                    s.services
                        .get_mut(c[1])
                        .ok_or_else(|| bad("rpc before its service"))?
                        .insert(c[2].to_string(), rpc);
                }
                _ => return Err(bad("unknown row kind")),
            }
        }
        Ok(s)
    }
}

fn type_of(f: &prost_types::FieldDescriptorProto) -> String {
    match f.r#type() {
        Type::Message | Type::Enum => f.type_name().to_string(),
        t => scalar_name(t),
    }
}

fn field_of(
    m: &DescriptorProto,
    f: &prost_types::FieldDescriptorProto,
    entries: &BTreeMap<String, (Field, Field)>,
) -> Field {
    let mut label = if f.label() == Label::Repeated {
        "repeated"
    } else {
        "optional"
    };
    let mut ty = type_of(f);
    if label == "repeated"
        && f.r#type() == Type::Message
        && let Some((k, v)) = entries.get(f.type_name())
    {
        label = "map";
        ty = format!("map<{},{}>", k.ty, v.ty);
    }
    let proto3_optional = f.proto3_optional();
    // A proto3 `optional` field sits in a synthetic oneof: not a real one.
    let oneof = match f.oneof_index {
        Some(i) if !proto3_optional => m.oneof_decl[i as usize].name().to_string(),
        _ => String::new(),
    };
    Field {
        name: f.name().to_string(),
        number: f.number(),
        label: label.to_string(),
        ty,
        oneof,
        proto3_optional,
    }
}

// ------------------------------------------------------------- the rules

#[derive(Debug, Default)]
struct Report {
    /// Upstream-named messages of ours that were compared.
    checked: usize,
    problems: Vec<String>,
    /// Names in an upstream package that upstream lacks (ignored).
    notes: Vec<String>,
}

impl Report {
    fn problem(&mut self, tag: char, at: &str, text: String) {
        self.problems.push(format!("[{tag}] {at}: {text}"));
    }
}

fn package(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn compare(ours: &Schema, up: &Schema, complete: &[&str]) -> Report {
    let mut r = Report::default();
    let up_packages: BTreeSet<&str> = up
        .messages
        .keys()
        .chain(up.enums.keys())
        .chain(up.services.keys())
        .map(|n| package(n))
        .collect();

    // [k] message on one side, enum on the other.
    for name in ours.messages.keys().filter(|n| up.enums.contains_key(*n)) {
        r.problem('k', name, "a message in ours, an enum upstream".into());
    }
    for name in ours.enums.keys().filter(|n| up.messages.contains_key(*n)) {
        r.problem('k', name, "an enum in ours, a message upstream".into());
    }

    // [a] [b] [c] fields of every upstream-named message.
    for (name, ours_msg) in &ours.messages {
        let Some(up_msg) = up.messages.get(name) else {
            if up_packages.contains(package(name)) && !up.enums.contains_key(name) {
                r.notes
                    .push(format!("{name} is not an upstream name (not checked)"));
            }
            continue;
        };
        r.checked += 1;
        let by_name: BTreeMap<&str, &Field> = up_msg.fields.iter().map(|f| (f.name.as_str(), f)).collect();
        let by_number: BTreeMap<i32, &Field> = up_msg.fields.iter().map(|f| (f.number, f)).collect();
        for f in &ours_msg.fields {
            let at = format!("{name}.{}", f.name);
            let Some(u) = by_name.get(f.name.as_str()) else {
                if let Some(other) = by_number.get(&f.number) {
                    let text = format!(
                        "number {} is upstream's field '{}' ({})",
                        f.number,
                        other.name,
                        other.show()
                    );
                    r.problem('c', &at, text);
                } else if up_msg
                    .reserved
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&f.number))
                {
                    r.problem('c', &at, format!("number {} is reserved upstream", f.number));
                } else if up_msg.reserved_names.contains(&f.name) {
                    r.problem('b', &at, "the name is reserved upstream".into());
                } else {
                    r.problem(
                        'b',
                        &at,
                        format!("upstream has no field of this name (ours: {})", f.show()),
                    );
                }
                continue;
            };
            let mut diffs = Vec::new();
            if f.number != u.number {
                let reuse = by_number
                    .get(&f.number)
                    .map(|o| format!(" (upstream's {} is '{}')", f.number, o.name))
                    .unwrap_or_default();
                diffs.push(format!("number {}, upstream {}{reuse}", f.number, u.number));
            }
            if f.ty != u.ty {
                diffs.push(format!("type {}, upstream {}", f.ty, u.ty));
            }
            if f.label != u.label {
                diffs.push(format!("label {}, upstream {}", f.label, u.label));
            }
            if f.oneof != u.oneof {
                diffs.push(format!("oneof '{}', upstream '{}'", f.oneof, u.oneof));
            }
            if f.proto3_optional != u.proto3_optional {
                let say = |b: bool| if b { "set" } else { "not set" };
                diffs.push(format!(
                    "proto3 optional {}, upstream {}",
                    say(f.proto3_optional),
                    say(u.proto3_optional)
                ));
            }
            if !diffs.is_empty() {
                r.problem('a', &at, diffs.join("; "));
            }
        }
    }

    // [f] complete records, and what they reach that we define.
    let mut queue: VecDeque<(String, Option<String>)> = VecDeque::new();
    for &c in complete {
        if !up.messages.contains_key(c) {
            r.problem(
                'f',
                c,
                "listed as a complete record but upstream has no such message".into(),
            );
        } else if !ours.messages.contains_key(c) {
            r.problem(
                'f',
                c,
                "listed as a complete record but not defined in ours".into(),
            );
        } else {
            queue.push_back((c.to_string(), None));
        }
    }
    let mut seen = BTreeSet::new();
    while let Some((name, via)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let have: BTreeSet<&str> = ours.messages[&name]
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        for u in &up.messages[&name].fields {
            if !have.contains(u.name.as_str()) {
                let reached = via
                    .as_ref()
                    .map(|v| format!(" [reached via {v}]"))
                    .unwrap_or_default();
                r.problem(
                    'f',
                    &format!("{name}.{}", u.name),
                    format!("missing in ours (upstream: {}){reached}", u.show()),
                );
            }
            let target = match u.ty.strip_prefix("map<") {
                Some(kv) => kv.trim_end_matches('>').split_once(',').map(|(_, v)| v),
                None => Some(u.ty.as_str()),
            };
            if let Some(t) = target.and_then(|t| t.strip_prefix('.'))
                && up.messages.contains_key(t)
                && ours.messages.contains_key(t)
                && !seen.contains(t)
            {
                queue.push_back((t.to_string(), Some(format!("{name}.{}", u.name))));
            }
        }
    }

    // [d] enum values.
    for (name, values) in &ours.enums {
        let Some(up_values) = up.enums.get(name) else {
            if up_packages.contains(package(name)) && !up.messages.contains_key(name) {
                r.notes
                    .push(format!("enum {name} is not an upstream name (not checked)"));
            }
            continue;
        };
        for (value, number) in values {
            let at = format!("{name}.{value}");
            match up_values.iter().find(|(n, _)| n == value) {
                Some((_, n)) if n == number => {}
                Some((_, n)) => r.problem('d', &at, format!("value {number}, upstream {n}")),
                None => {
                    let names: Vec<&str> = up_values
                        .iter()
                        .filter(|(_, n)| n == number)
                        .map(|(v, _)| v.as_str())
                        .collect();
                    let text = if names.is_empty() {
                        format!("upstream has no such value (ours = {number})")
                    } else {
                        format!(
                            "upstream has no such value; upstream names {number} {}",
                            names.join("/")
                        )
                    };
                    r.problem('d', &at, text);
                }
            }
        }
    }

    // [e] rpc signatures.
    for (name, methods) in &ours.services {
        let Some(up_methods) = up.services.get(name) else {
            if up_packages.contains(package(name)) {
                r.notes
                    .push(format!("service {name} is not an upstream name (not checked)"));
            }
            continue;
        };
        for (method, rpc) in methods {
            let at = format!("{name}/{method}");
            let Some(u) = up_methods.get(method) else {
                r.problem('e', &at, "upstream has no such method".into());
                continue;
            };
            let yes = |b: bool| if b { "yes" } else { "no" };
            let mut diffs = Vec::new();
            if rpc.input != u.input {
                diffs.push(format!("input {}, upstream {}", rpc.input, u.input));
            }
            if rpc.output != u.output {
                diffs.push(format!("output {}, upstream {}", rpc.output, u.output));
            }
            if rpc.client_streaming != u.client_streaming {
                diffs.push(format!(
                    "client streaming {}, upstream {}",
                    yes(rpc.client_streaming),
                    yes(u.client_streaming)
                ));
            }
            if rpc.server_streaming != u.server_streaming {
                diffs.push(format!(
                    "server streaming {}, upstream {}",
                    yes(rpc.server_streaming),
                    yes(u.server_streaming)
                ));
            }
            if !diffs.is_empty() {
                r.problem('e', &at, diffs.join("; "));
            }
        }
    }
    r
}

// ------------------------------------------------------------------ tests

fn upstream() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FACTS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "facts table {} is missing ({e}); regenerate it with scripts/gen-wire-facts.py",
            path.display()
        )
    });
    let source = format!("# source: {VITESS_MODULE}");
    assert!(
        text.lines().any(|l| l.starts_with(&source)),
        "{FACTS} does not name its source as '{VITESS_MODULE}'"
    );
    Schema::from_table(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn our_protos_match_vitess_on_the_wire() {
    let ours = Schema::ours();
    let up = upstream();
    let report = compare(&ours, &up, COMPLETE);
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    assert!(
        report.problems.is_empty(),
        "wire compatibility with {VITESS_MODULE}: {} problem(s)\n{}\n",
        report.problems.len(),
        report.problems.join("\n")
    );
    // Not vacuous: the Vitess packages were all found and compared.
    assert!(
        report.checked >= 100,
        "only {} upstream-named messages compared",
        report.checked
    );
    for svc in [
        "tabletmanagerservice.TabletManager",
        "queryservice.Query",
        "vtctlservice.Vtctld",
    ] {
        assert!(
            ours.services.contains_key(svc) && up.services.contains_key(svc),
            "{svc} not compared"
        );
    }
}

#[test]
fn the_facts_table_covers_the_vitess_packages_we_define() {
    let up = upstream();
    for name in [
        "topodata.Tablet",
        "replicationdata.FullStatus",
        "query.StreamHealthResponse",
    ] {
        assert!(up.messages.contains_key(name), "{FACTS} lacks {name}");
    }
    assert!(up.enums.contains_key("topodata.TabletType"));
    let ours = Schema::ours();
    let up_packages: BTreeSet<&str> = up.messages.keys().map(|n| package(n)).collect();
    for name in ours.messages.keys().filter(|n| !n.starts_with("vtorc.")) {
        assert!(
            up_packages.contains(package(name)),
            "{name}: package unknown to {FACTS}"
        );
    }
}

// Each rule fires on a deliberately broken copy of our schema, naming the
// field or value at fault (so the test above cannot pass by checking nothing).

fn problems_after(change: impl FnOnce(&mut Schema)) -> Vec<String> {
    let mut ours = Schema::ours();
    change(&mut ours);
    compare(&ours, &upstream(), COMPLETE).problems
}

fn field_mut<'a>(s: &'a mut Schema, msg: &str, field: &str) -> &'a mut Field {
    let m = s
        .messages
        .get_mut(msg)
        .unwrap_or_else(|| panic!("ours lacks {msg}"));
    m.fields
        .iter_mut()
        .find(|f| f.name == field)
        .unwrap_or_else(|| panic!("{msg} lacks {field}"))
}

fn assert_one(problems: &[String], prefix: &str) {
    assert!(
        problems.len() == 1 && problems[0].starts_with(prefix),
        "expected one problem starting with {prefix:?}, got {problems:#?}"
    );
}

#[test]
fn rule_a_field_number_type_label_oneof_presence() {
    let p = problems_after(|s| field_mut(s, "topodata.Tablet", "hostname").number = 99);
    assert_one(&p, "[a] topodata.Tablet.hostname: number 99, upstream 2");
    let p = problems_after(|s| field_mut(s, "topodata.Tablet", "mysql_port").ty = "int64".into());
    assert_one(&p, "[a] topodata.Tablet.mysql_port: type int64, upstream int32");
    let p = problems_after(|s| field_mut(s, "topodata.Shard", "source_shards").label = "optional".into());
    assert_one(
        &p,
        "[a] topodata.Shard.source_shards: label optional, upstream repeated",
    );
    let p = problems_after(|s| field_mut(s, "topodata.CellInfo", "root").oneof = "x".into());
    assert_one(&p, "[a] topodata.CellInfo.root: oneof 'x', upstream ''");
    let p = problems_after(|s| field_mut(s, "topodata.CellInfo", "root").proto3_optional = true);
    assert_one(
        &p,
        "[a] topodata.CellInfo.root: proto3 optional set, upstream not set",
    );
}

#[test]
fn rule_b_and_c_field_names_and_numbers() {
    let p = problems_after(|s| {
        let f = field_mut(s, "topodata.CellInfo", "root");
        f.name = "rooot".into();
        f.number = 40;
    });
    assert!(
        p.iter()
            .any(|l| l.starts_with("[b] topodata.CellInfo.rooot: upstream has no field")),
        "{p:#?}"
    );
    let p = problems_after(|s| field_mut(s, "topodata.CellInfo", "root").name = "rooot".into());
    assert!(
        p.iter()
            .any(|l| l.starts_with("[c] topodata.CellInfo.rooot: number 2 is upstream's field 'root'")),
        "{p:#?}"
    );
    let p = problems_after(|s| {
        let f = field_mut(s, "topodata.Tablet", "hostname");
        f.name = "hostname_old".into();
        f.number = 3; // reserved upstream
    });
    assert!(
        p.iter()
            .any(|l| l.starts_with("[c] topodata.Tablet.hostname_old: number 3 is reserved")),
        "{p:#?}"
    );
}

#[test]
fn rule_f_complete_records_and_what_they_reach() {
    let p = problems_after(|s| {
        let m = s.messages.get_mut("topodata.Shard").expect("Shard");
        m.fields.retain(|f| f.name != "vtorc_state");
    });
    assert_one(&p, "[f] topodata.Shard.vtorc_state: missing in ours");
    let p = problems_after(|s| {
        let m = s
            .messages
            .get_mut("topodata.ThrottlerConfig")
            .expect("ThrottlerConfig");
        m.fields.retain(|f| f.name != "metric_thresholds");
    });
    assert_one(
        &p,
        "[f] topodata.ThrottlerConfig.metric_thresholds: missing in ours",
    );
    assert!(p[0].contains("[reached via topodata."), "{p:#?}");
}

#[test]
fn rule_d_e_k_enums_rpcs_and_kinds() {
    let p = problems_after(|s| {
        let v = s.enums.get_mut("topodata.TabletType").expect("TabletType");
        v.iter_mut().find(|(n, _)| n == "SPARE").expect("SPARE").1 = 42;
    });
    assert_one(&p, "[d] topodata.TabletType.SPARE: value 42, upstream");
    let p = problems_after(|s| {
        let m = s.services.get_mut("queryservice.Query").expect("Query");
        m.get_mut("StreamHealth").expect("StreamHealth").server_streaming = false;
    });
    assert_one(
        &p,
        "[e] queryservice.Query/StreamHealth: server streaming no, upstream yes",
    );
    let p = problems_after(|s| {
        let m = s.services.get_mut("queryservice.Query").expect("Query");
        let rpc = m["StreamHealth"].clone();
        m.insert("Nope".into(), rpc);
    });
    assert_one(&p, "[e] queryservice.Query/Nope: upstream has no such method");
    let p = problems_after(|s| {
        s.messages.insert("topodata.TabletType".into(), Msg::default());
    });
    assert!(
        p.iter().any(|l| l.starts_with("[k] topodata.TabletType")),
        "{p:#?}"
    );
}
