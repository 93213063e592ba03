//! A serde deserializer over a spanned TOML tree that reports *every* error
//! of a document, each with its key path and source span.
//!
//! Serde's derived code stops at the first error. To find all of them, the
//! whole document is deserialized in passes. When a pass fails, the error is
//! recorded where it arose, and a *patch* is added so the next pass gets past
//! it:
//!
//! - a key whose value is wrong is removed (`Patch::Remove`);
//! - a key that is required but missing (or was removed) is stood in for by a
//!   neutral value (`Patch::Synth`: `0`, `""`, `false`, empty table...);
//! - if a neutral value is itself refused (a type with its own parsing),
//!   the enclosing key is removed instead, and so on upwards.
//!
//! Unknown keys never reach the derived code: `deserialize_struct` is told the
//! field names, reports the others and skips them. Every pass adds at least one
//! new patch or the loop stops, so it ends; duplicate reports across passes are
//! merged.
//!
//! Invariant: the result is `Ok` only if no error was recorded in any pass.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// A parsed TOML value with the byte span it came from.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// key, span of the key, value
    Table(Vec<(String, Range<usize>, Node)>),
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a date-time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

/// One problem found in the document, located by byte span and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    pub path: String,
    pub span: Range<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patch {
    Remove,
    Synth,
}

/// Shared state of one deserialization (all passes).
#[derive(Debug, Default)]
struct Cx {
    diags: RefCell<Vec<Diag>>,
    seen: RefCell<HashSet<(String, String)>>,
    patches: RefCell<HashMap<String, Patch>>,
    progressed: Cell<bool>,
}

impl Cx {
    fn record(&self, path: &str, span: Range<usize>, message: String) {
        if self
            .seen
            .borrow_mut()
            .insert((path.to_string(), message.clone()))
        {
            self.diags.borrow_mut().push(Diag {
                path: path.to_string(),
                span,
                message,
            });
        }
    }

    fn patch(&self, path: &str, p: Patch) {
        let mut patches = self.patches.borrow_mut();
        let allowed = match patches.get(path) {
            None => true,
            Some(Patch::Remove) => p == Patch::Synth,
            Some(Patch::Synth) => false,
        };
        if allowed {
            patches.insert(path.to_string(), p);
            self.progressed.set(true);
        }
    }

    fn patch_at(&self, path: &str) -> Option<Patch> {
        self.patches.borrow().get(path).copied()
    }
}

/// The error type threaded through serde. `located` means it has been
/// recorded already; callers above only pass it on.
#[derive(Debug)]
pub(crate) struct DeError {
    msg: String,
    located: bool,
    missing: Option<&'static str>,
}

impl DeError {
    fn located() -> Self {
        Self {
            msg: String::new(),
            located: true,
            missing: None,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            msg: msg.to_string(),
            located: false,
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            msg: format!("missing required key `{field}`"),
            located: false,
            missing: Some(field),
        }
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// What one deserialization found: the value (built with every patch, so
/// it may hold stand-ins when `diags` is not empty), every problem, and the
/// key paths that were patched (removed or stood in for).
pub(crate) struct Partial<T> {
    pub value: Option<T>,
    pub diags: Vec<Diag>,
    pub patched: Vec<(String, bool)>,
}

/// Deserializes `root` into `T` with every patch needed to get past its
/// problems. `patched` holds each patched path and whether it was removed.
pub(crate) fn from_node_partial<T: DeserializeOwned>(root: &Node) -> Partial<T> {
    const MAX_PASSES: usize = 512;
    let cx = Cx::default();
    let mut value = None;
    for _ in 0..MAX_PASSES {
        cx.progressed.set(false);
        let de = ValueDe {
            node: Some(root),
            path: String::new(),
            parent: None,
            span: root.span.clone(),
            cx: &cx,
        };
        match T::deserialize(de) {
            Ok(v) => {
                value = Some(v);
                break;
            }
            Err(e) => {
                if !e.located {
                    cx.record("", root.span.clone(), e.msg);
                }
                if !cx.progressed.get() {
                    break;
                }
            }
        }
    }
    let mut diags = cx.diags.into_inner();
    if value.is_none() && diags.is_empty() {
        diags.push(Diag {
            path: String::new(),
            span: root.span.clone(),
            message: "the document could not be read (too many errors)".into(),
        });
    }
    let patched = cx
        .patches
        .into_inner()
        .into_iter()
        .map(|(p, how)| (p, how == Patch::Remove))
        .collect();
    Partial {
        value,
        diags,
        patched,
    }
}

/// The path in the document of `path`, a path in a value deserialized with
/// the array elements in `removed` left out (their followers moved up).
pub(crate) fn original_path(path: &str, removed: &HashSet<String>) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                out.push_str(rest);
                break;
            };
            let Ok(i) = r[..end].parse::<usize>() else {
                out.push_str(rest);
                break;
            };
            let (mut kept, mut j) = (0usize, 0usize);
            loop {
                if !removed.contains(&format!("{out}[{j}]")) {
                    if kept == i {
                        break;
                    }
                    kept += 1;
                }
                j += 1;
            }
            out.push_str(&format!("[{j}]"));
            rest = &r[end + 1..];
        } else {
            let skip = usize::from(rest.starts_with('.'));
            let end = rest[skip..]
                .find(['.', '['])
                .map_or(rest.len(), |e| e + skip);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// A value (or, with `node: None`, a neutral stand-in for a missing one).
struct ValueDe<'a> {
    node: Option<&'a Node>,
    path: String,
    parent: Option<String>,
    /// Where to point for errors: the node's span, or the enclosing table's
    /// for a stand-in.
    span: Range<usize>,
    cx: &'a Cx,
}

impl<'a> ValueDe<'a> {
    fn child(&self, key: &str, node: Option<&'a Node>) -> ValueDe<'a> {
        ValueDe {
            node,
            path: child_path(&self.path, key),
            parent: Some(self.path.clone()),
            span: node.map_or_else(|| self.span.clone(), |n| n.span.clone()),
            cx: self.cx,
        }
    }

    fn element(&self, index: usize, node: &'a Node) -> ValueDe<'a> {
        ValueDe {
            node: Some(node),
            path: format!("{}[{index}]", self.path),
            parent: Some(self.path.clone()),
            span: node.span.clone(),
            cx: self.cx,
        }
    }

    /// Records `e` at this value (unless recorded already) and patches the
    /// document so the next pass gets past it.
    fn fail(&self, e: DeError) -> DeError {
        if e.located {
            return e;
        }
        match self.node {
            Some(_) => {
                self.cx.record(&self.path, self.span.clone(), e.msg);
                self.cx.patch(&self.path, Patch::Remove);
            }
            None => {
                // A stand-in was refused: drop the enclosing key instead.
                if let Some(parent) = &self.parent {
                    self.cx.patch(parent, Patch::Remove);
                }
            }
        }
        DeError::located()
    }

    fn type_error(&self, expected: &str) -> DeError {
        let found = self.node.map_or("nothing", |n| n.kind.describe());
        self.fail(de::Error::custom(format!(
            "expected {expected}, found {found}"
        )))
    }

    fn visit_leaf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let Some(node) = self.node else {
            return visitor.visit_unit().map_err(|e| self.fail(e));
        };
        let r = match &node.kind {
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Datetime(s) => visitor.visit_str(s),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    visitor.visit_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    visitor.visit_u64(v)
                } else {
                    Err(de::Error::custom(format!("integer {i} is out of range")))
                }
            }
            Kind::Array(_) => return self.deserialize_seq_inner(visitor),
            Kind::Table(_) => return self.deserialize_map_inner(visitor, None),
        };
        r.map_err(|e| self.fail(e))
    }

    fn table_entries(
        &self,
        fields: Option<&'static [&'static str]>,
    ) -> Result<Vec<(&'a str, Option<&'a Node>)>, DeError> {
        let mut out = Vec::new();
        match self.node {
            None => {}
            Some(Node {
                kind: Kind::Table(entries),
                ..
            }) => {
                for (k, kspan, v) in entries {
                    let p = child_path(&self.path, k);
                    if self.cx.patch_at(&p) == Some(Patch::Remove) {
                        continue;
                    }
                    if let Some(fields) = fields {
                        if !fields.contains(&k.as_str()) {
                            let expected = if fields.is_empty() {
                                "this table takes no keys".to_string()
                            } else {
                                format!(
                                    "expected one of {}",
                                    fields
                                        .iter()
                                        .map(|f| format!("`{f}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            };
                            self.cx.record(
                                &p,
                                kspan.clone(),
                                format!("unknown key `{k}`; {expected}"),
                            );
                            continue;
                        }
                    }
                    out.push((k.as_str(), Some(v)));
                }
            }
            Some(_) => return Err(self.type_error("a table")),
        }
        if let Some(fields) = fields {
            for f in fields {
                if self.cx.patch_at(&child_path(&self.path, f)) == Some(Patch::Synth)
                    && !out.iter().any(|(k, _)| k == f)
                {
                    out.push((f, None));
                }
            }
        }
        Ok(out)
    }

    fn deserialize_map_inner<V: Visitor<'a>>(
        self,
        visitor: V,
        fields: Option<&'static [&'static str]>,
    ) -> Result<V::Value, DeError> {
        let entries = self.table_entries(fields)?;
        let access = TableAccess {
            owner: &self,
            entries: entries.into_iter(),
            pending: None,
        };
        match visitor.visit_map(access) {
            Ok(v) => Ok(v),
            Err(e) if e.located => Err(e),
            Err(e) => {
                if let Some(field) = e.missing {
                    let p = child_path(&self.path, field);
                    let was_removed = self.cx.patch_at(&p) == Some(Patch::Remove);
                    if self.node.is_some() && !was_removed {
                        self.cx.record(&p, self.span.clone(), e.msg);
                    }
                    self.cx.patch(&p, Patch::Synth);
                    Err(DeError::located())
                } else {
                    Err(self.fail(e))
                }
            }
        }
    }

    fn deserialize_seq_inner<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items: Vec<(usize, &'a Node)> = match self.node {
            None => Vec::new(),
            Some(Node {
                kind: Kind::Array(items),
                ..
            }) => items
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    self.cx.patch_at(&format!("{}[{i}]", self.path)) != Some(Patch::Remove)
                })
                .collect(),
            Some(_) => return Err(self.type_error("an array")),
        };
        let access = ArrayAccess {
            owner: &self,
            items: items.into_iter(),
        };
        visitor.visit_seq(access).map_err(|e| self.fail(e))
    }
}

struct TableAccess<'a, 'o> {
    owner: &'o ValueDe<'a>,
    entries: std::vec::IntoIter<(&'a str, Option<&'a Node>)>,
    pending: Option<(&'a str, Option<&'a Node>)>,
}

impl<'de, 'o> MapAccess<'de> for TableAccess<'de, 'o> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some((k, v));
        let child = self.owner.child(k, v);
        seed.deserialize(k.into_deserializer())
            .map(Some)
            .map_err(|e: DeError| child.fail(e))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let Some((k, v)) = self.pending.take() else {
            return Err(de::Error::custom("value asked for before its key"));
        };
        let child = self.owner.child(k, v);
        let child2 = self.owner.child(k, v);
        seed.deserialize(child).map_err(|e| child2.fail(e))
    }
}

struct ArrayAccess<'a, 'o> {
    owner: &'o ValueDe<'a>,
    items: std::vec::IntoIter<(usize, &'a Node)>,
}

impl<'de, 'o> SeqAccess<'de> for ArrayAccess<'de, 'o> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let child = self.owner.element(i, node);
        let child2 = self.owner.element(i, node);
        seed.deserialize(child)
            .map(Some)
            .map_err(|e| child2.fail(e))
    }
}

macro_rules! forward_to_leaf {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                self.visit_leaf(visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    forward_to_leaf! {
        deserialize_any deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u128 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_identifier
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            None => visitor.visit_bool(false).map_err(|e| self.fail(e)),
            Some(Node {
                kind: Kind::Bool(_),
                ..
            }) => self.visit_leaf(visitor),
            Some(_) => Err(self.type_error("a boolean (true or false)")),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            None => visitor.visit_u64(0).map_err(|e| self.fail(e)),
            Some(Node {
                kind: Kind::Int(_), ..
            }) => self.visit_leaf(visitor),
            Some(_) => Err(self.type_error("a non-negative integer")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            None => visitor.visit_f64(0.0).map_err(|e| self.fail(e)),
            Some(Node {
                kind: Kind::Int(i), ..
            }) => visitor.visit_f64(*i as f64).map_err(|e| self.fail(e)),
            Some(Node {
                kind: Kind::Float(_),
                ..
            }) => self.visit_leaf(visitor),
            Some(_) => Err(self.type_error("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            None => visitor.visit_str("").map_err(|e| self.fail(e)),
            Some(Node {
                kind: Kind::Str(_) | Kind::Datetime(_),
                ..
            }) => self.visit_leaf(visitor),
            Some(_) => Err(self.type_error("a string")),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            None => visitor.visit_none().map_err(|e| self.fail(e)),
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit().map_err(|e| self.fail(e))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq_inner(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq_inner(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq_inner(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_map_inner(visitor, None)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map_inner(visitor, Some(fields))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (variant, value): (&str, Option<&'de Node>) = match self.node {
            None => (variants.first().copied().unwrap_or(""), None),
            Some(Node {
                kind: Kind::Str(s), ..
            }) => (s.as_str(), None),
            Some(Node {
                kind: Kind::Table(entries),
                ..
            }) if entries.len() == 1 => match entries.first() {
                Some((k, _, v)) => (k.as_str(), Some(v)),
                None => return Err(self.type_error("a string")),
            },
            Some(_) => {
                let names = variants
                    .iter()
                    .map(|v| format!("\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(self.type_error(&format!("one of {names}")));
            }
        };
        let value_de = self.child(variant, value);
        let access = Variant {
            name: variant,
            value: value_de,
        };
        visitor.visit_enum(access).map_err(|e| self.fail(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Variant<'a> {
    name: &'a str,
    value: ValueDe<'a>,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = DeError;
    type Variant = ValueDe<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), DeError> {
        let name: &str = self.name;
        let v = seed.deserialize(name.into_deserializer())?;
        Ok((v, self.value))
    }
}

impl<'de> VariantAccess<'de> for ValueDe<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq_inner(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map_inner(visitor, Some(fields))
    }
}

/// Converts toml's spanned parse tree into [`Node`]s.
pub(crate) fn node_from_toml(v: &toml::Spanned<toml::de::DeValue<'_>>) -> Node {
    use toml::de::DeValue;
    let span = v.span();
    let kind = match v.get_ref() {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            match i128::from_str_radix(&digits, i.radix()) {
                Ok(n) => Kind::Int(n),
                Err(_) => Kind::Str(i.to_string()),
            }
        }
        DeValue::Float(f) => Kind::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
        DeValue::Array(a) => Kind::Array(a.iter().map(node_from_toml).collect()),
        DeValue::Table(t) => Kind::Table(table_entries(t)),
    };
    Node { span, kind }
}

pub(crate) fn table_entries(t: &toml::de::DeTable<'_>) -> Vec<(String, Range<usize>, Node)> {
    t.iter()
        .map(|(k, v)| (k.get_ref().to_string(), k.span(), node_from_toml(v)))
        .collect()
}

/// The span of the value at `path` (`a.b[2].c`) in the tree under `node`,
/// if there is one.
pub(crate) fn span_of(node: &Node, path: &str) -> Option<Range<usize>> {
    let mut at = node;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let i: usize = r[..end].parse().ok()?;
            let Kind::Array(items) = &at.kind else {
                return None;
            };
            at = items.get(i)?;
            rest = &r[end + 1..];
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            let Kind::Table(entries) = &at.kind else {
                return None;
            };
            let (_, _, v) = entries.iter().find(|(k, _, _)| k == key)?;
            at = v;
            rest = &r[end..];
        }
    }
    Some(at.span.clone())
}
