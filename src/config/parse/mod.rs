//! Config stage 1: `proxy.toml` text to the raw structs, reporting every
//! unknown key and wrong type at once (serde stops at the first), each
//! naming its key, client or route.
//!
//! How: a strict deserialize of the whole file first (the usual case, one
//! pass). If it fails, each key of each table is deserialized again on its
//! own (the rest of the document cut away, spans kept), so every failing
//! key is found; a table's required fields are then checked with its
//! failing keys removed. Everything goes through `RawConfig` itself, so a
//! field added to a raw struct needs nothing here.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml_edit::Item;

use super::diag::ConfigError;
use super::raw::RawConfig;
use doc::{array_len, get, narrowed, remove};
use message::describe;

mod doc;
mod message;

/// A config that did not parse: every error, and the part that did parse
/// (broken clients, routes and sections removed) for validation to check.
pub(super) struct Partial {
    pub errors: Vec<ConfigError>,
    pub rest: Option<Box<RawConfig>>,
    /// Clients removed for their own errors: routes naming them are not
    /// told the client "is not defined".
    pub broken_clients: Vec<String>,
}

/// One step into the document: a key of a table or an element of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn parse(source: &str) -> Result<RawConfig, Partial> {
    let doc = match toml_edit::ImDocument::parse(source) {
        Ok(doc) => doc,
        // TOML syntax: the parser cannot go on past it.
        Err(e) => {
            return Err(Partial {
                errors: vec![ConfigError {
                    span: e.span(),
                    message: super::hide_value(e.message().trim()),
                }],
                rest: None,
                broken_clients: Vec::new(),
            })
        }
    };
    let root = doc.into_item();
    let first = match deserialize(&root) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let mut walk = Walk {
        root: &root,
        found: Vec::new(),
    };
    walk.table(&[]);
    if walk.found.is_empty() {
        // Not expected (the walk re-runs the same deserializer), but never
        // report a broken config as clean.
        walk.found.push((Vec::new(), first));
    }
    let mut pruned = root.clone();
    let mut broken_clients = BTreeSet::new();
    let mut entries: Vec<Vec<Seg>> = walk.found.iter().map(|(p, _)| entry(p)).collect();
    entries.sort_by(|a, b| b.iter().map(seg_order).cmp(a.iter().map(seg_order)));
    entries.dedup();
    for p in &entries {
        if let [Seg::Key(c), Seg::Key(name)] = p.as_slice() {
            if c == "clients" {
                broken_clients.insert(name.clone());
            }
        }
        remove(&mut pruned, p);
    }
    let mut errors: Vec<ConfigError> = walk
        .found
        .iter()
        .map(|(p, e)| ConfigError {
            span: e.span(),
            message: describe(&root, p, e.message()),
        })
        .collect();
    errors.dedup();
    Err(Partial {
        errors,
        rest: deserialize(&pruned).ok().map(Box::new),
        broken_clients: broken_clients.into_iter().collect(),
    })
}

fn deserialize(root: &Item) -> Result<RawConfig, toml_edit::de::Error> {
    let table = root.as_table().cloned().unwrap_or_default();
    RawConfig::deserialize(toml_edit::de::Deserializer::from(
        toml_edit::DocumentMut::from(table),
    ))
}

struct Walk<'a> {
    root: &'a Item,
    found: Vec<(Vec<Seg>, toml_edit::de::Error)>,
}

impl Walk<'_> {
    /// Finds the errors in the table at `path`; true when there are any.
    fn table(&mut self, path: &[Seg]) -> bool {
        let Some(node) = get(self.root, path) else {
            return false;
        };
        let Some(t) = node.as_table_like() else {
            return false;
        };
        let keys: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
        let mut failing = BTreeSet::new();
        for k in keys {
            let at = [path, &[Seg::Key(k.clone())]].concat();
            let Err(e) = deserialize(&narrowed(self.root, path, &|x| x == k)) else {
                continue;
            };
            if self.key(&at, e) {
                failing.insert(k);
            }
        }
        // Required fields, checked with the failing keys cut away. Only an
        // error about this table counts (its ancestors were cut down too),
        // and a "missing" key that is there, only wrong, is reported already.
        match deserialize(&narrowed(self.root, path, &|x| !failing.contains(x))) {
            Err(e)
                if (path.is_empty() || (e.span().is_some() && e.span() == node.span()))
                    && !failing
                        .iter()
                        .any(|k| e.message().starts_with(&format!("missing field `{k}`"))) =>
            {
                self.found.push((path.to_vec(), e));
                true
            }
            _ => !failing.is_empty(),
        }
    }

    /// Judges the error of a key deserialized alone. An error about the
    /// value itself is recorded. Otherwise it lies deeper, inside a table
    /// or an array, and is looked for there, so each of its own keys is
    /// reported; a required field found missing nowhere inside is only the
    /// cut (this table's or an ancestor's fields were removed): `false`.
    fn key(&mut self, at: &[Seg], e: toml_edit::de::Error) -> bool {
        let Some(child) = get(self.root, at) else {
            return false;
        };
        let span = e.span();
        let itself = match at.last() {
            Some(Seg::Key(k)) => e.message().starts_with(&format!("unknown field `{k}`")),
            _ => false,
        } || (span.is_some() && span == child.span());
        if !itself {
            if child.is_table_like() && self.table(at) {
                return true;
            }
            if let Some(n) = array_len(child) {
                let mut any = false;
                for i in 0..n {
                    let el = [at, &[Seg::Index(i)]].concat();
                    if get(self.root, &el).is_some_and(Item::is_table_like) {
                        any |= self.table(&el);
                    }
                }
                if any {
                    return true;
                }
            }
            if e.message().starts_with("missing field") {
                return false;
            }
        }
        self.found.push((at.to_vec(), e));
        true
    }
}

/// What is cut away for validation when `path` has an error: a whole
/// client or route (half a client would only give misleading errors), or
/// the key in a section.
fn entry(path: &[Seg]) -> Vec<Seg> {
    match path {
        [Seg::Key(c), _, ..] if c == "clients" || c == "routes" => path[..2].to_vec(),
        [Seg::Key(c)] if c == "clients" || c == "routes" => path.to_vec(),
        [section, key, ..] => vec![section.clone(), key.clone()],
        _ => path.to_vec(),
    }
}

/// Sort key so that array elements are removed from the back.
fn seg_order(s: &Seg) -> (usize, &str) {
    match s {
        Seg::Index(i) => (*i, ""),
        Seg::Key(k) => (0, k.as_str()),
    }
}
