//! Where in the TOML text a problem is: line and column of an offset, the
//! dotted key at an offset, and the span of a dotted key.

use std::ops::Range;

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The dotted key (`cookie.secrets[1]`) whose key or value covers `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::DeValue;
    // A table's span covers only its `[header]`, so every table is searched.
    fn walk(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        match value {
            DeValue::Table(table) => table.iter().any(|(key, value)| {
                path.push(key.get_ref().to_string());
                let found = key.span().contains(&offset)
                    || value.span().contains(&offset)
                        && !matches!(value.get_ref(), DeValue::Table(_))
                    || walk(value.get_ref(), offset, path);
                if !found {
                    path.pop();
                }
                found
            }),
            DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let inside = item.span().contains(&offset);
                if inside || walk(item.get_ref(), offset, path) {
                    if let Some(last) = path.last_mut() {
                        last.insert_str(last.len(), &format!("[{i}]"));
                    }
                    return true;
                }
                false
            }),
            _ => false,
        }
    }
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(&DeValue::Table(root.into_inner()), offset, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

/// The span of the value at a dotted key, or of its table when the key is absent.
pub(super) fn span_of(text: &str, dotted: &str) -> Option<Range<usize>> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = root.get_ref();
    for part in dotted.split('.') {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        span = Some(value.span());
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    span
}
