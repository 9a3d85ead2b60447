//! Generates Tidelog's Kafka protocol codec from Apache Kafka's JSON message specs.
//!
//! ```text
//! tidelog-kafka-codegen SPEC_DIR OUT_DIR
//! ```
//!
//! For every message listed in [`MESSAGES`] (plus the request and response headers) it
//! writes `OUT_DIR/<snake_name>.rs` with one plain struct per (nested) struct of the spec,
//! each with `decode(&mut Decoder, version)`, `encode(&self, &mut BytesMut, version)`,
//! `min_size(version)` (the fewest bytes an encoding can take, used to bound array counts
//! before anything is allocated) and, for tests, `sample(rng, version)`. It also writes
//! `OUT_DIR/mod.rs` with the module list, version tables and a request-body dispatcher.
//!
//! The generated code calls the hand-written runtime in `wire/src/kafka/codec.rs`; all
//! length and count checks live there. Unknown tagged fields are skipped, as the protocol
//! requires. Run it through `wire/schema/generate-kafka.sh`, which also runs rustfmt.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The APIs the broker implements: request and response specs are generated for each.
const MESSAGES: &[&str] = &[
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "ElectLeaders",
    "DescribeCluster",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "DescribeConfigs",
    "AlterConfigs",
    "IncrementalAlterConfigs",
    "DeleteRecords",
    "CreatePartitions",
    "DeleteGroups",
    "OffsetDelete",
    "DescribeLogDirs",
    "DescribeProducers",
];

/// An inclusive version range; `lo > hi` is the empty range ("none").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Versions {
    lo: i16,
    hi: i16,
}

impl Versions {
    const NONE: Versions = Versions { lo: 1, hi: 0 };

    fn parse(text: &str) -> Result<Versions> {
        let text = text.trim();
        if text == "none" || text.is_empty() {
            return Ok(Versions::NONE);
        }
        if let Some(lo) = text.strip_suffix('+') {
            return Ok(Versions {
                lo: lo.parse()?,
                hi: i16::MAX,
            });
        }
        if let Some((lo, hi)) = text.split_once('-') {
            return Ok(Versions {
                lo: lo.parse()?,
                hi: hi.parse()?,
            });
        }
        let v = text.parse()?;
        Ok(Versions { lo: v, hi: v })
    }

    fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    /// A Rust boolean expression over `version`.
    fn cond(self) -> String {
        if self.is_empty() {
            "false".into()
        } else if self.hi == i16::MAX {
            if self.lo <= 0 {
                "true".into()
            } else {
                format!("version >= {}", self.lo)
            }
        } else if self.lo == self.hi {
            format!("version == {}", self.lo)
        } else {
            format!("({}..={}).contains(&version)", self.lo, self.hi)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    Uuid,
}

impl Prim {
    fn parse(name: &str) -> Option<Prim> {
        Some(match name {
            "bool" => Prim::Bool,
            "int8" => Prim::Int8,
            "int16" => Prim::Int16,
            "uint16" => Prim::Uint16,
            "int32" => Prim::Int32,
            "uint32" => Prim::Uint32,
            "int64" => Prim::Int64,
            "float64" => Prim::Float64,
            "uuid" => Prim::Uuid,
            _ => return None,
        })
    }

    fn rust(self) -> &'static str {
        match self {
            Prim::Bool => "bool",
            Prim::Int8 => "i8",
            Prim::Int16 => "i16",
            Prim::Uint16 => "u16",
            Prim::Int32 => "i32",
            Prim::Uint32 => "u32",
            Prim::Int64 => "i64",
            Prim::Float64 => "f64",
            Prim::Uuid => "Uuid",
        }
    }

    fn size(self) -> usize {
        match self {
            Prim::Bool | Prim::Int8 => 1,
            Prim::Int16 | Prim::Uint16 => 2,
            Prim::Int32 | Prim::Uint32 => 4,
            Prim::Int64 | Prim::Float64 => 8,
            Prim::Uuid => 16,
        }
    }

    fn read(self) -> String {
        let f = match self {
            Prim::Bool => "bool",
            Prim::Int8 => "i8",
            Prim::Int16 => "i16",
            Prim::Uint16 => "u16",
            Prim::Int32 => "i32",
            Prim::Uint32 => "u32",
            Prim::Int64 => "i64",
            Prim::Float64 => "f64",
            Prim::Uuid => "uuid",
        };
        format!("d.{f}()?")
    }

    /// Writes the value of expression `v` (by value).
    fn write(self, v: &str) -> String {
        match self {
            Prim::Bool => format!("e.put_u8(u8::from({v}));"),
            Prim::Int8 => format!("e.put_i8({v});"),
            Prim::Int16 => format!("e.put_i16({v});"),
            Prim::Uint16 => format!("e.put_u16({v});"),
            Prim::Int32 => format!("e.put_i32({v});"),
            Prim::Uint32 => format!("e.put_u32({v});"),
            Prim::Int64 => format!("e.put_i64({v});"),
            Prim::Float64 => format!("e.put_f64({v});"),
            Prim::Uuid => format!("e.put_slice(&{v});"),
        }
    }

    fn sample(self) -> &'static str {
        match self {
            Prim::Bool => "r.next() & 1 == 1",
            Prim::Int8 => "r.next() as i8",
            Prim::Int16 => "r.next() as i16",
            Prim::Uint16 => "r.next() as u16",
            Prim::Int32 => "r.next() as i32",
            Prim::Uint32 => "r.next() as u32",
            Prim::Int64 => "r.next() as i64",
            Prim::Float64 => "(r.next() % 100_000) as f64 / 8.0",
            Prim::Uuid => "r.uuid()",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ty {
    Prim(Prim),
    String,
    Bytes,
    Records,
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(name: &str) -> Ty {
        if let Some(inner) = name.strip_prefix("[]") {
            return Ty::Array(Box::new(Ty::parse(inner)));
        }
        if let Some(p) = Prim::parse(name) {
            return Ty::Prim(p);
        }
        match name {
            "string" => Ty::String,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            other => Ty::Struct(other.to_owned()),
        }
    }

    /// The Rust type of a (non-optional) value.
    fn rust(&self) -> String {
        match self {
            Ty::Prim(p) => p.rust().into(),
            Ty::String => "String".into(),
            Ty::Bytes | Ty::Records => "Bytes".into(),
            Ty::Struct(name) => name.clone(),
            Ty::Array(inner) => format!("Vec<{}>", inner.rust()),
        }
    }

    /// Smallest encoding, as a Rust expression (`fx`: flexible encoding in use).
    fn min_size(&self, fx: &str) -> String {
        match self {
            Ty::Prim(p) => p.size().to_string(),
            Ty::String => format!("if {fx} {{ 1 }} else {{ 2 }}"),
            Ty::Bytes | Ty::Records | Ty::Array(_) => format!("if {fx} {{ 1 }} else {{ 4 }}"),
            Ty::Struct(name) => format!("{name}::min_size(version)"),
        }
    }

    /// Decodes one non-null value.
    fn read(&self, fx: &str) -> String {
        match self {
            Ty::Prim(p) => p.read(),
            Ty::String => format!("d.string({fx})?"),
            Ty::Bytes | Ty::Records => format!("d.bytes({fx})?"),
            Ty::Struct(name) => format!("{name}::decode(d, version)?"),
            Ty::Array(inner) => format!(
                "{{ let min = {min}; d.array({fx}, min, |d| Ok({read}))?.unwrap_or_default() }}",
                min = inner.min_size(fx),
                read = inner.read(fx),
            ),
        }
    }

    /// Decodes a value that may be null (only strings, bytes, records and arrays can be).
    fn read_nullable(&self, fx: &str) -> String {
        match self {
            Ty::String => format!("d.nullable_string({fx})?"),
            Ty::Bytes | Ty::Records => format!("d.nullable_bytes({fx})?"),
            Ty::Array(inner) => format!(
                "{{ let min = {min}; d.array({fx}, min, |d| Ok({read}))? }}",
                min = inner.min_size(fx),
                read = inner.read(fx),
            ),
            other => format!("Some({})", other.read(fx)),
        }
    }

    /// Writes the non-null value behind reference expression `v`.
    fn write(&self, v: &str, fx: &str) -> String {
        match self {
            Ty::Prim(p) => p.write(&format!("*{v}")),
            Ty::String => format!("put_string(e, {v}, {fx})?;"),
            Ty::Bytes | Ty::Records => format!("put_bytes(e, {v}, {fx})?;"),
            Ty::Struct(_) => format!("{v}.encode(e, version)?;"),
            Ty::Array(inner) => format!(
                "put_array_len(e, Some({v}.len()), {fx})?; for item in {v}.iter() {{ {} }}",
                inner.write("item", fx)
            ),
        }
    }

    fn sample(&self) -> String {
        match self {
            Ty::Prim(p) => p.sample().into(),
            Ty::String => "r.string()".into(),
            Ty::Bytes | Ty::Records => "r.bytes()".into(),
            Ty::Struct(name) => format!("{name}::sample(r, version)"),
            Ty::Array(inner) => format!("(0..r.len()).map(|_| {}).collect()", inner.sample()),
        }
    }

    fn nullable_kind(&self) -> bool {
        matches!(self, Ty::String | Ty::Bytes | Ty::Records | Ty::Array(_))
    }
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ident: String,
    ty: Ty,
    versions: Versions,
    nullable: Versions,
    tag: Option<(u32, Versions)>,
    /// `flexibleVersions` of the field itself (only `"none"` occurs: the header's ClientId).
    flexible: Option<Versions>,
    default: Option<Value>,
    about: String,
}

impl Field {
    /// True when the Rust type is an `Option` (the field is nullable in some version).
    fn optional(&self) -> bool {
        !self.nullable.is_empty() && self.ty.nullable_kind()
    }

    fn rust_type(&self) -> String {
        if self.optional() {
            format!("Option<{}>", self.ty.rust())
        } else {
            self.ty.rust()
        }
    }

    /// The flexible-encoding expression for this field.
    fn fx(&self) -> &'static str {
        match self.flexible {
            Some(v) if v.is_empty() => "false",
            _ => "flexible",
        }
    }

    fn default_expr(&self) -> Result<String> {
        let text = match &self.default {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => bail!("field {}: odd default {other}", self.name),
        };
        let base = match (&self.ty, text.as_deref()) {
            (_, Some("null")) if self.optional() => return Ok("None".into()),
            (Ty::Prim(Prim::Bool), Some(t)) => t.to_string(),
            (Ty::Prim(Prim::Bool), None) => "false".into(),
            (Ty::Prim(Prim::Uuid), _) => "[0; 16]".into(),
            (Ty::Prim(Prim::Float64), Some(t)) => format!("{t}_f64"),
            (Ty::Prim(Prim::Float64), None) => "0.0".into(),
            (Ty::Prim(p), Some(t)) => {
                let value: i64 = if let Some(hex) = t.strip_prefix("0x") {
                    i64::from_str_radix(hex, 16)?
                } else {
                    t.parse()
                        .with_context(|| format!("default of {}", self.name))?
                };
                format!("{value}_{}", p.rust())
            }
            (Ty::Prim(p), None) => format!("0_{}", p.rust()),
            (Ty::String, Some(t)) => format!("String::from({t:?})"),
            (Ty::String, None) => "String::new()".into(),
            (Ty::Bytes | Ty::Records, _) => "Bytes::new()".into(),
            (Ty::Struct(name), _) => format!("{name}::default()"),
            (Ty::Array(_), _) => "Vec::new()".into(),
        };
        Ok(if self.optional() {
            format!("Some({base})")
        } else {
            base
        })
    }

    /// Statement decoding this field from `d` into `this`.
    fn decode_stmt(&self) -> String {
        let fx = self.fx();
        let value = if self.optional() {
            let null_cond = self.nullable.cond();
            format!(
                "if {null_cond} {{ {} }} else {{ Some({}) }}",
                self.ty.read_nullable(fx),
                self.ty.read(fx)
            )
        } else {
            self.ty.read(fx)
        };
        format!("this.{} = {value};", self.ident)
    }

    /// Statements encoding this field into `e`.
    fn encode_stmt(&self) -> String {
        let fx = self.fx();
        let field = format!("self.{}", self.ident);
        if self.optional() {
            let null_cond = self.nullable.cond();
            let null_write = match &self.ty {
                Ty::String => format!("put_nullable_string(e, None, {fx})?;"),
                Ty::Bytes | Ty::Records => format!("put_nullable_bytes(e, None, {fx})?;"),
                Ty::Array(_) => format!("put_array_len(e, None, {fx})?;"),
                _ => unreachable!("only nullable kinds are optional"),
            };
            let empty = match &self.ty {
                Ty::String => format!("put_string(e, \"\", {fx})?;"),
                Ty::Bytes | Ty::Records => format!("put_bytes(e, &Bytes::new(), {fx})?;"),
                Ty::Array(_) => format!("put_array_len(e, Some(0), {fx})?;"),
                _ => unreachable!("only nullable kinds are optional"),
            };
            format!(
                "match &{field} {{ Some(value) => {{ {} }} None if {null_cond} => {{ {null_write} }} None => {{ {empty} }} }}",
                self.ty.write("value", fx)
            )
        } else {
            self.ty.write(&format!("(&{field})"), fx)
        }
    }

    fn sample_expr(&self) -> String {
        if self.optional() {
            format!(
                "if ({}) && r.next() % 4 == 0 {{ None }} else {{ Some({}) }}",
                self.nullable.cond(),
                self.ty.sample()
            )
        } else {
            self.ty.sample()
        }
    }
}

#[derive(Debug, Clone)]
struct StructDef {
    name: String,
    about: String,
    fields: Vec<Field>,
}

struct Message {
    name: String,
    kind: String,
    api_key: Option<i16>,
    valid: Versions,
    flexible: Versions,
    structs: Vec<StructDef>,
}

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
];

fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn ident(name: &str) -> String {
    let s = snake(name);
    if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

/// Strips `//` comment lines (the specs carry a license header and notes).
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn parse_fields(fields: &Value, structs: &mut Vec<StructDef>) -> Result<Vec<Field>> {
    let mut out = Vec::new();
    for f in fields
        .as_array()
        .ok_or_else(|| anyhow!("fields not an array"))?
    {
        let name = str_of(f, "name").ok_or_else(|| anyhow!("field without name"))?;
        let ty_name = str_of(f, "type").ok_or_else(|| anyhow!("{name}: no type"))?;
        let ty = Ty::parse(ty_name);
        let versions = Versions::parse(str_of(f, "versions").unwrap_or("none"))?;
        let nullable = match str_of(f, "nullableVersions") {
            Some(v) => Versions::parse(v)?,
            None => Versions::NONE,
        };
        if !nullable.is_empty() && matches!(ty, Ty::Struct(_)) {
            bail!("{name}: nullable structs are not supported by this generator");
        }
        let tag = match f.get("tag") {
            Some(t) => {
                let t = t
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| anyhow!("{name}: bad tag"))?;
                let tv = Versions::parse(str_of(f, "taggedVersions").unwrap_or("none"))?;
                Some((t, tv))
            }
            None => None,
        };
        let flexible = match str_of(f, "flexibleVersions") {
            Some(v) => Some(Versions::parse(v)?),
            None => None,
        };
        if let Some(sub) = f.get("fields") {
            let struct_name = match &ty {
                Ty::Struct(n) => n.clone(),
                Ty::Array(inner) => match inner.as_ref() {
                    Ty::Struct(n) => n.clone(),
                    _ => bail!("{name}: fields on a non-struct array"),
                },
                _ => bail!("{name}: fields on a primitive"),
            };
            let fields = parse_fields(sub, structs)?;
            structs.push(StructDef {
                name: struct_name,
                about: str_of(f, "about").unwrap_or_default().to_owned(),
                fields,
            });
        }
        out.push(Field {
            name: name.to_owned(),
            ident: ident(name),
            ty,
            versions,
            nullable,
            tag,
            flexible,
            default: f.get("default").cloned(),
            about: str_of(f, "about").unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

fn load(path: &Path) -> Result<Message> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let spec: Value = serde_json::from_str(&strip_comments(&text))
        .with_context(|| format!("parsing {}", path.display()))?;
    let name = str_of(&spec, "name")
        .ok_or_else(|| anyhow!("no name"))?
        .to_owned();
    let kind = str_of(&spec, "type").unwrap_or_default().to_owned();
    let api_key = spec
        .get("apiKey")
        .and_then(Value::as_i64)
        .map(i16::try_from)
        .transpose()?;
    let valid = Versions::parse(str_of(&spec, "validVersions").unwrap_or("none"))?;
    let flexible = Versions::parse(str_of(&spec, "flexibleVersions").unwrap_or("none"))?;
    let mut structs = Vec::new();
    if let Some(common) = spec.get("commonStructs").and_then(Value::as_array) {
        for c in common {
            let cname = str_of(c, "name").ok_or_else(|| anyhow!("common struct name"))?;
            let fields = parse_fields(c.get("fields").unwrap_or(&Value::Null), &mut structs)?;
            structs.push(StructDef {
                name: cname.to_owned(),
                about: String::new(),
                fields,
            });
        }
    }
    let fields = parse_fields(
        spec.get("fields")
            .ok_or_else(|| anyhow!("{name}: no fields"))?,
        &mut structs,
    )?;
    structs.push(StructDef {
        name: name.clone(),
        about: format!("The `{name}` message (`{}`).", file_name(path)),
        fields,
    });
    Ok(Message {
        name,
        kind,
        api_key,
        valid,
        flexible,
        structs,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn doc(out: &mut String, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    for line in text.lines() {
        let _ = writeln!(
            out,
            "/// {}",
            line.trim().replace('[', "\\[").replace(']', "\\]")
        );
    }
}

fn gen_struct(out: &mut String, s: &StructDef) -> Result<()> {
    doc(out, &s.about);
    let _ = writeln!(out, "#[derive(Debug, Clone, PartialEq)]");
    let _ = writeln!(out, "pub struct {} {{", s.name);
    for f in &s.fields {
        doc(out, &f.about);
        let _ = writeln!(out, "    pub {}: {},", f.ident, f.rust_type());
    }
    let _ = writeln!(out, "}}\n");

    let _ = writeln!(out, "impl Default for {} {{", s.name);
    let _ = writeln!(out, "    fn default() -> Self {{ Self {{");
    for f in &s.fields {
        let _ = writeln!(out, "        {}: {},", f.ident, f.default_expr()?);
    }
    let _ = writeln!(out, "    }} }}\n}}\n");

    let mut tagged: Vec<&Field> = s.fields.iter().filter(|f| f.tag.is_some()).collect();
    tagged.sort_by_key(|f| f.tag.map(|(t, _)| t));

    let _ = writeln!(out, "impl {} {{", s.name);
    // decode
    let _ = writeln!(
        out,
        "    /// Decodes version `version` from `d`; every length is checked before allocating."
    );
    let _ = writeln!(
        out,
        "    pub fn decode(d: &mut Decoder<'_>, version: i16) -> Result<Self, DecodeError> {{"
    );
    let _ = writeln!(out, "        let flexible = is_flexible(version);");
    let _ = writeln!(out, "        let _ = flexible;");
    let _ = writeln!(out, "        let mut this = Self::default();");
    for f in s.fields.iter().filter(|f| f.tag.is_none()) {
        let _ = writeln!(
            out,
            "        if {} {{ {} }}",
            f.versions.cond(),
            f.decode_stmt()
        );
    }
    let _ = writeln!(out, "        if flexible {{");
    if tagged.is_empty() {
        let _ = writeln!(out, "            d.tagged_fields(|_, _| Ok(()))?;");
    } else {
        let _ = writeln!(out, "            d.tagged_fields(|tag, d| {{");
        let _ = writeln!(out, "                match tag {{");
        for f in &tagged {
            let (t, tv) = f.tag.unwrap_or((0, Versions::NONE));
            let _ = writeln!(
                out,
                "                    {t} if {} => {{ {} }}",
                tv.cond(),
                f.decode_stmt()
            );
        }
        let _ = writeln!(out, "                    _ => {{}}");
        let _ = writeln!(out, "                }}");
        let _ = writeln!(out, "                Ok(())");
        let _ = writeln!(out, "            }})?;");
    }
    let _ = writeln!(out, "        }}");
    let _ = writeln!(out, "        Ok(this)");
    let _ = writeln!(out, "    }}\n");

    // encode
    let _ = writeln!(out, "    /// Encodes version `version` onto `e`.");
    let _ = writeln!(
        out,
        "    pub fn encode(&self, e: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{"
    );
    let _ = writeln!(out, "        let flexible = is_flexible(version);");
    let _ = writeln!(out, "        let _ = flexible;");
    for f in s.fields.iter().filter(|f| f.tag.is_none()) {
        let _ = writeln!(
            out,
            "        if {} {{ {} }}",
            f.versions.cond(),
            f.encode_stmt()
        );
    }
    let _ = writeln!(out, "        if flexible {{");
    if tagged.is_empty() {
        let _ = writeln!(out, "            put_uvarint(e, 0);");
    } else {
        let _ = writeln!(out, "            let defaults = Self::default();");
        let _ = writeln!(out, "            let mut count = 0u32;");
        for f in &tagged {
            let (_, tv) = f.tag.unwrap_or((0, Versions::NONE));
            let _ = writeln!(
                out,
                "            if ({}) && self.{id} != defaults.{id} {{ count += 1; }}",
                tv.cond(),
                id = f.ident
            );
        }
        let _ = writeln!(out, "            put_uvarint(e, count);");
        for f in &tagged {
            let (t, tv) = f.tag.unwrap_or((0, Versions::NONE));
            let _ = writeln!(
                out,
                "            if ({}) && self.{id} != defaults.{id} {{",
                tv.cond(),
                id = f.ident
            );
            let _ = writeln!(out, "                let mut inner = BytesMut::new();");
            let _ = writeln!(
                out,
                "                {{ let e = &mut inner; {} }}",
                f.encode_stmt()
            );
            let _ = writeln!(out, "                put_uvarint(e, {t});");
            let _ = writeln!(
                out,
                "                put_uvarint(e, len_u32(inner.len())?);"
            );
            let _ = writeln!(out, "                e.put_slice(&inner);");
            let _ = writeln!(out, "            }}");
        }
    }
    let _ = writeln!(out, "        }}");
    let _ = writeln!(out, "        Ok(())");
    let _ = writeln!(out, "    }}\n");

    // min_size
    let _ = writeln!(
        out,
        "    /// The fewest bytes an encoding of version `version` takes."
    );
    let _ = writeln!(out, "    pub fn min_size(version: i16) -> usize {{");
    let _ = writeln!(out, "        let flexible = is_flexible(version);");
    let _ = writeln!(out, "        let _ = flexible;");
    let _ = writeln!(out, "        let mut size = 0usize;");
    for f in s.fields.iter().filter(|f| f.tag.is_none()) {
        let _ = writeln!(
            out,
            "        if {} {{ size += {}; }}",
            f.versions.cond(),
            f.ty.min_size(f.fx())
        );
    }
    let _ = writeln!(out, "        if flexible {{ size += 1; }}");
    let _ = writeln!(out, "        size");
    let _ = writeln!(out, "    }}\n");

    // sample
    let _ = writeln!(
        out,
        "    /// A random value valid for `version` (round-trip tests)."
    );
    let _ = writeln!(out, "    #[cfg(test)]");
    let _ = writeln!(
        out,
        "    pub(crate) fn sample(r: &mut SampleRng, version: i16) -> Self {{"
    );
    let _ = writeln!(out, "        let mut this = Self::default();");
    for f in &s.fields {
        let cond = match f.tag {
            Some((_, tv)) => format!("({}) && ({})", f.versions.cond(), tv.cond()),
            None => f.versions.cond(),
        };
        let _ = writeln!(
            out,
            "        if {cond} {{ this.{} = {}; }}",
            f.ident,
            f.sample_expr()
        );
    }
    let _ = writeln!(out, "        this");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}\n");
    Ok(())
}

fn gen_message(m: &Message, source: &str) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! `{}`: generated by tidelog-kafka-codegen from `{source}`. Do not edit.\n",
        m.name
    );
    let _ = writeln!(
        out,
        "#![allow(clippy::all, unused_mut, unused_variables, unused_imports, unused_parens)]\n"
    );
    let _ = writeln!(out, "use bytes::{{BufMut, Bytes, BytesMut}};\n");
    let _ = writeln!(out, "#[allow(unused_imports)]");
    let _ = writeln!(out, "use crate::kafka::codec::{{len_u32, put_array_len, put_bytes, put_nullable_bytes, put_nullable_string, put_string, put_uvarint, DecodeError, Decoder, EncodeError, Uuid}};");
    let _ = writeln!(out, "#[cfg(test)]");
    let _ = writeln!(out, "use crate::kafka::codec::SampleRng;\n");
    if let Some(key) = m.api_key {
        let _ = writeln!(out, "/// The API key.");
        let _ = writeln!(out, "pub const API_KEY: i16 = {key};");
    }
    let _ = writeln!(out, "/// Lowest version the spec defines.");
    let _ = writeln!(out, "pub const MIN_VERSION: i16 = {};", m.valid.lo);
    let _ = writeln!(out, "/// Highest version the spec defines.");
    let _ = writeln!(out, "pub const MAX_VERSION: i16 = {};\n", m.valid.hi);
    let _ = writeln!(
        out,
        "/// Whether `version` uses the flexible (compact, tagged) encoding."
    );
    let _ = writeln!(out, "pub fn is_flexible(version: i16) -> bool {{");
    let _ = writeln!(out, "    {}", m.flexible.cond());
    let _ = writeln!(out, "}}\n");
    for s in &m.structs {
        gen_struct(&mut out, s)?;
    }
    let _ = writeln!(out, "#[cfg(test)]\nmod tests {{");
    let _ = writeln!(out, "    use super::*;\n");
    let _ = writeln!(out, "    #[test]");
    let _ = writeln!(out, "    fn round_trips_every_version() {{");
    let _ = writeln!(
        out,
        "        for version in MIN_VERSION..=MAX_VERSION {{ crate::kafka::codec::check_round_trip(version, {}::sample, |v, e, ver| v.encode(e, ver), {}::decode, {}::min_size); }}",
        m.name, m.name, m.name
    );
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    let _ = m.kind.as_str();
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, spec_dir, out_dir] = args.as_slice() else {
        bail!("usage: tidelog-kafka-codegen SPEC_DIR OUT_DIR");
    };
    let spec_dir = Path::new(spec_dir);
    let out_dir = Path::new(out_dir);
    std::fs::create_dir_all(out_dir)?;
    let mut names: Vec<String> = vec!["RequestHeader".into(), "ResponseHeader".into()];
    for m in MESSAGES {
        names.push(format!("{m}Request"));
        names.push(format!("{m}Response"));
    }
    let mut modules = Vec::new();
    let mut requests: BTreeMap<i16, (String, String, Versions, Versions)> = BTreeMap::new();
    let mut responses: BTreeMap<i16, Versions> = BTreeMap::new();
    for name in &names {
        let path = spec_dir.join(format!("{name}.json"));
        let message = load(&path)?;
        let module = snake(name);
        let code = gen_message(&message, &file_name(&path))?;
        std::fs::write(out_dir.join(format!("{module}.rs")), code)?;
        if let Some(key) = message.api_key {
            match message.kind.as_str() {
                "request" => {
                    requests.insert(
                        key,
                        (
                            module.clone(),
                            message.name.clone(),
                            message.valid,
                            message.flexible,
                        ),
                    );
                }
                "response" => {
                    responses.insert(key, message.flexible);
                }
                _ => {}
            }
        }
        modules.push(module);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! Kafka messages generated by tidelog-kafka-codegen from Kafka's JSON specs. Do not edit;"
    );
    let _ = writeln!(
        out,
        "//! regenerate with `wire/schema/generate-kafka.sh`.\n"
    );
    let _ = writeln!(out, "#![allow(missing_docs)]\n");
    for m in &modules {
        let _ = writeln!(out, "pub mod {m};");
    }
    let _ = writeln!(out, "\nuse super::codec::{{DecodeError, Decoder}};\n");
    let _ = writeln!(out, "/// A decoded request body.");
    let _ = writeln!(out, "#[derive(Debug, Clone, PartialEq)]");
    let _ = writeln!(out, "#[allow(clippy::large_enum_variant)]");
    let _ = writeln!(out, "pub enum RequestBody {{");
    for (module, name, _, _) in requests.values() {
        let variant = name.trim_end_matches("Request");
        let _ = writeln!(out, "    {variant}({module}::{name}),");
    }
    let _ = writeln!(out, "}}\n");
    let _ = writeln!(
        out,
        "/// Decodes the body of request `api_key` at `version` (the header already consumed)."
    );
    let _ = writeln!(out, "pub fn decode_request_body(api_key: i16, version: i16, d: &mut Decoder<'_>) -> Result<RequestBody, DecodeError> {{");
    let _ = writeln!(out, "    match api_key {{");
    for (key, (module, name, valid, _)) in &requests {
        let variant = name.trim_end_matches("Request");
        let _ = writeln!(
            out,
            "        {key} if ({}..={}).contains(&version) => Ok(RequestBody::{variant}({module}::{name}::decode(d, version)?)),",
            valid.lo, valid.hi
        );
        let _ = writeln!(
            out,
            "        {key} => Err(DecodeError::UnsupportedVersion {{ api_key, version }}),"
        );
    }
    let _ = writeln!(
        out,
        "        _ => Err(DecodeError::UnknownApiKey(api_key)),"
    );
    let _ = writeln!(out, "    }}\n}}\n");
    let _ = writeln!(
        out,
        "/// Whether request `api_key` at `version` uses the flexible encoding (header v2)."
    );
    let _ = writeln!(
        out,
        "pub fn request_is_flexible(api_key: i16, version: i16) -> bool {{"
    );
    let _ = writeln!(out, "    match api_key {{");
    for (key, (module, _, _, _)) in &requests {
        let _ = writeln!(out, "        {key} => {module}::is_flexible(version),");
    }
    let _ = writeln!(out, "        _ => false,\n    }}\n}}\n");
    let _ = writeln!(
        out,
        "/// Whether response `api_key` at `version` uses the flexible encoding."
    );
    let _ = writeln!(
        out,
        "pub fn response_is_flexible(api_key: i16, version: i16) -> bool {{"
    );
    let _ = writeln!(out, "    match api_key {{");
    for (key, flexible) in &responses {
        let _ = writeln!(out, "        {key} => {},", flexible.cond());
    }
    let _ = writeln!(out, "        _ => false,\n    }}\n}}");
    std::fs::write(out_dir.join("mod.rs"), out)?;
    println!(
        "generated {} modules into {}",
        modules.len(),
        out_dir.display()
    );
    Ok(())
}
