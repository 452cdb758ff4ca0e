//! How many bytes a cached result takes: the weigher that bounds the cache by size rather
//! than by entry count.

use std::mem::size_of;

use rmcp::model::{
    Annotations, CallToolResult, ContentBlock, MetaObject, Resource, ResourceContents,
};
use serde_json::Value;

/// The fixed cost of one cached entry, in bytes, on top of its result: the entry itself
/// (result header, times, tool and key), and the store's bookkeeping for it (moka's entry
/// record, its access-order and write-order queue nodes, its slot in the hash table and
/// in the expiry timer wheel).
///
/// Calibrated with a counting global allocator (moka 0.12.16, x86-64): with it, the
/// estimate is within 1% of the bytes the cache really allocates per entry for a short
/// text result (~745 B), a 40-row structured result (~28 KB) and a 16 KiB text result.
pub const ENTRY_OVERHEAD_BYTES: usize = 480;

/// One node of a JSON map's B-tree: room for 11 keys (`String`) and 11 values (`Value`),
/// plus its header. A map of `n > 0` entries is counted as `ceil(n / 8)` nodes (nodes are
/// between half and fully used), so a small map costs a whole node, as it does in memory.
const MAP_NODE_BYTES: usize = 11 * (size_of::<String>() + size_of::<Value>()) + 16;

/// Estimates the memory a cached `result` takes, in bytes: [`ENTRY_OVERHEAD_BYTES`], plus
/// every content block (its slot in the vector and the length of each string it holds:
/// text, base64 data, URIs, MIME types), plus the structured content and every `_meta`
/// (each JSON string's length, plus a fixed cost per value and per map node).
///
/// It walks the result once, without serializing it, so its cost is linear in the size of
/// a result that was just produced. It is an estimate, not an allocator's count: strings
/// are counted by length (a stored result is a fresh clone, so capacity equals length),
/// and allocator rounding is ignored.
///
/// ```
/// use mcp_tower_cache::{ENTRY_OVERHEAD_BYTES, estimate_result_bytes};
/// use rmcp::model::{CallToolResult, ContentBlock};
///
/// let result = CallToolResult::success(vec![ContentBlock::text("x".repeat(10_000))]);
/// let bytes = estimate_result_bytes(&result);
/// assert!(bytes >= 10_000 + ENTRY_OVERHEAD_BYTES);
/// assert!(bytes < 10_000 + ENTRY_OVERHEAD_BYTES + 1_000);
/// ```
pub fn estimate_result_bytes(result: &CallToolResult) -> usize {
    let mut bytes = ENTRY_OVERHEAD_BYTES;
    bytes = bytes.saturating_add(
        result
            .content
            .len()
            .saturating_mul(size_of::<ContentBlock>()),
    );
    for block in &result.content {
        bytes = bytes.saturating_add(content_block_bytes(block));
    }
    if let Some(structured) = &result.structured_content {
        bytes = bytes.saturating_add(json_bytes(structured));
    }
    bytes.saturating_add(meta_bytes(result.meta.as_ref()))
}

fn content_block_bytes(block: &ContentBlock) -> usize {
    match block {
        ContentBlock::Text(text) => text
            .text
            .len()
            .saturating_add(meta_bytes(text.meta.as_ref()))
            .saturating_add(annotations_bytes(text.annotations.as_ref())),
        ContentBlock::Image(image) => image
            .data
            .len()
            .saturating_add(image.mime_type.len())
            .saturating_add(meta_bytes(image.meta.as_ref()))
            .saturating_add(annotations_bytes(image.annotations.as_ref())),
        ContentBlock::Audio(audio) => audio
            .data
            .len()
            .saturating_add(audio.mime_type.len())
            .saturating_add(meta_bytes(audio.meta.as_ref()))
            .saturating_add(annotations_bytes(audio.annotations.as_ref())),
        ContentBlock::Resource(embedded) => resource_contents_bytes(&embedded.resource)
            .saturating_add(meta_bytes(embedded.meta.as_ref()))
            .saturating_add(annotations_bytes(embedded.annotations.as_ref())),
        ContentBlock::ResourceLink(link) => resource_bytes(link),
        // A content type added to rmcp later: count it by its encoded size, which is the
        // right order of magnitude and stays correct whatever the type holds.
        other => serde_json::to_vec(other).map_or(0, |encoded| encoded.len()),
    }
}

fn resource_contents_bytes(contents: &ResourceContents) -> usize {
    match contents {
        ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            meta,
        } => uri
            .len()
            .saturating_add(opt_str(mime_type.as_deref()))
            .saturating_add(text.len())
            .saturating_add(meta_bytes(meta.as_ref())),
        ResourceContents::BlobResourceContents {
            uri,
            mime_type,
            blob,
            meta,
        } => uri
            .len()
            .saturating_add(opt_str(mime_type.as_deref()))
            .saturating_add(blob.len())
            .saturating_add(meta_bytes(meta.as_ref())),
        other => serde_json::to_vec(other).map_or(0, |encoded| encoded.len()),
    }
}

fn resource_bytes(link: &Resource) -> usize {
    let icons = link.icons.as_ref().map_or(0, |icons| {
        icons.iter().fold(0usize, |sum, icon| {
            let sizes = icon.sizes.as_ref().map_or(0, |sizes| {
                sizes
                    .iter()
                    .map(|s| s.len().saturating_add(size_of::<String>()))
                    .fold(0usize, usize::saturating_add)
            });
            sum.saturating_add(size_of_val(icon))
                .saturating_add(icon.src.len())
                .saturating_add(opt_str(icon.mime_type.as_deref()))
                .saturating_add(sizes)
        })
    });
    link.uri
        .len()
        .saturating_add(link.name.len())
        .saturating_add(opt_str(link.title.as_deref()))
        .saturating_add(opt_str(link.description.as_deref()))
        .saturating_add(opt_str(link.mime_type.as_deref()))
        .saturating_add(icons)
        .saturating_add(meta_bytes(link.meta.as_ref()))
        .saturating_add(annotations_bytes(link.annotations.as_ref()))
}

fn annotations_bytes(annotations: Option<&Annotations>) -> usize {
    annotations.map_or(0, |a| {
        a.audience
            .as_ref()
            .map_or(0, |audience| audience.len().saturating_mul(8))
            .saturating_add(opt_str(a.last_modified.as_deref()))
    })
}

fn meta_bytes(meta: Option<&MetaObject>) -> usize {
    meta.map_or(0, |meta| map_bytes(&meta.0))
}

fn opt_str(s: Option<&str>) -> usize {
    s.map_or(0, str::len)
}

fn map_bytes(map: &serde_json::Map<String, Value>) -> usize {
    let nodes = map.len().div_ceil(8).saturating_mul(MAP_NODE_BYTES);
    map.iter().fold(nodes, |sum, (key, value)| {
        sum.saturating_add(key.len())
            .saturating_add(json_heap_bytes(value))
    })
}

/// A JSON value standing alone (structured content): its own slot plus what it holds.
fn json_bytes(value: &Value) -> usize {
    size_of::<Value>().saturating_add(json_heap_bytes(value))
}

/// What a JSON value holds on the heap, beyond its own slot.
fn json_heap_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().fold(
            items.len().saturating_mul(size_of::<Value>()),
            |sum, item| sum.saturating_add(json_heap_bytes(item)),
        ),
        Value::Object(map) => map_bytes(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::EmbeddedResource;
    use serde_json::json;

    fn text(n: usize) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text("a".repeat(n))])
    }

    #[test]
    fn grows_with_every_part_of_the_result() {
        let base = estimate_result_bytes(&text(0));
        assert!(base >= ENTRY_OVERHEAD_BYTES);
        assert_eq!(estimate_result_bytes(&text(1000)), base + 1000);

        let mut structured = text(0);
        structured.structured_content = Some(json!({"rows": ["x".repeat(5000)]}));
        assert!(estimate_result_bytes(&structured) > base + 5000);

        let mut with_meta = text(0);
        with_meta.meta = Some(MetaObject(
            json!({"note": "y".repeat(3000)})
                .as_object()
                .cloned()
                .unwrap(),
        ));
        assert!(estimate_result_bytes(&with_meta) > base + 3000);

        let image =
            CallToolResult::success(vec![ContentBlock::image("z".repeat(7000), "image/png")]);
        assert!(estimate_result_bytes(&image) > base + 7000);

        let blob = CallToolResult::success(vec![ContentBlock::Resource(EmbeddedResource::new(
            ResourceContents::BlobResourceContents {
                uri: "file:///b".into(),
                mime_type: None,
                blob: "q".repeat(9000),
                meta: None,
            },
        ))]);
        assert!(estimate_result_bytes(&blob) > base + 9000);

        let link = CallToolResult::success(vec![ContentBlock::ResourceLink(Resource::new(
            "file:///".to_owned() + &"l".repeat(2000),
            "link",
        ))]);
        assert!(estimate_result_bytes(&link) > base + 2000);
    }

    #[test]
    fn nested_json_counts_every_level() {
        let mut flat = text(0);
        flat.structured_content = Some(json!([1, 2, 3]));
        let mut nested = text(0);
        nested.structured_content = Some(json!([[1], [2], [3]]));
        assert!(estimate_result_bytes(&nested) > estimate_result_bytes(&flat));
    }
}
