//! Walking and cutting the parsed TOML document (tables, inline tables and
//! arrays of either alike) for the collect-all parse: copies keep their
//! spans, so errors found in a copy still point into the file.

use toml_edit::Item;

use super::Seg;

pub(super) fn array_len(item: &Item) -> Option<usize> {
    match item {
        Item::ArrayOfTables(a) => Some(a.len()),
        Item::Value(toml_edit::Value::Array(a)) => Some(a.len()),
        _ => None,
    }
}

pub(super) fn get<'a>(root: &'a Item, path: &[Seg]) -> Option<&'a Item> {
    path.iter().try_fold(root, |item, seg| match seg {
        Seg::Key(k) => item.as_table_like()?.get(k),
        Seg::Index(i) => item.get(*i),
    })
}

/// A copy of the document holding only the way down to `path`, and there
/// only the keys `keep` accepts. Spans are kept, so errors still point
/// into the file.
pub(super) fn narrowed(root: &Item, path: &[Seg], keep: &dyn Fn(&str) -> bool) -> Item {
    let mut copy = root.clone();
    let mut node = Some(&mut copy);
    for seg in path {
        node = node.and_then(|n| only(n, seg));
    }
    if let Some(t) = node.and_then(Item::as_table_like_mut) {
        let drop: Vec<String> = t
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| !keep(k))
            .collect();
        for k in drop {
            t.remove(&k);
        }
    }
    copy
}

/// Keeps only `seg` in `item` and returns it.
pub(super) fn only<'a>(item: &'a mut Item, seg: &Seg) -> Option<&'a mut Item> {
    match seg {
        Seg::Key(k) => {
            let t = item.as_table_like_mut()?;
            let drop: Vec<String> = t
                .iter()
                .map(|(x, _)| x.to_string())
                .filter(|x| x != k)
                .collect();
            for x in drop {
                t.remove(&x);
            }
            t.get_mut(k)
        }
        Seg::Index(i) => {
            let n = array_len(item)?;
            for j in (0..n).rev().filter(|j| j != i) {
                remove_index(item, j);
            }
            item.get_mut(0)
        }
    }
}

pub(super) fn remove_index(item: &mut Item, i: usize) {
    match item {
        Item::ArrayOfTables(a) => a.remove(i),
        Item::Value(toml_edit::Value::Array(a)) => {
            a.remove(i);
        }
        _ => {}
    }
}

/// Removes what `path` names from the document.
pub(super) fn remove(root: &mut Item, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut node = Some(root);
    for seg in parent {
        node = node.and_then(|n| match seg {
            Seg::Key(k) => n.as_table_like_mut()?.get_mut(k),
            Seg::Index(i) => n.get_mut(*i),
        });
    }
    let Some(node) = node else { return };
    match last {
        Seg::Key(k) => {
            if let Some(t) = node.as_table_like_mut() {
                t.remove(k);
            }
        }
        Seg::Index(i) if array_len(node).is_some_and(|n| *i < n) => remove_index(node, *i),
        Seg::Index(_) => {}
    }
}
