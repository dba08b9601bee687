//! The node's captions glue: the platform's caption declarations (the live
//! input's stored `captions` JSON) into the shared
//! [`banyan_captions::Registry`], and the live input's `captions` list.

use banyan_captions::{CaptionTrackInfo, Registry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::LiveInputRow;

/// One stored caption declaration (the API's `captions` entries).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    instream_id: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    name: String,
}

/// The declarations stored for an input (an unreadable value is none).
pub fn declared(row_captions: &str) -> Vec<CaptionTrackInfo> {
    serde_json::from_str::<Vec<Stored>>(row_captions)
        .unwrap_or_default()
        .into_iter()
        .map(|s| CaptionTrackInfo {
            instream_id: s.instream_id,
            language: s.language,
            name: s.name,
        })
        .collect()
}

/// Loads every input's declarations into the registry (after each change
/// to live inputs, and on a shared store periodically).
pub fn load_declared(registry: &Registry, rows: &[LiveInputRow]) {
    registry.replace_declared(rows.iter().map(|r| (r.uid.clone(), declared(&r.captions))));
}

/// The live input's `captions`: the declarations, then every channel present
/// in the live stream without one, as `"und"`. When the stream is not live
/// here, only the declarations.
pub fn input_captions(registry: &Registry, row: &LiveInputRow) -> Value {
    let tracks = registry.tracks(&row.uid, &declared(&row.captions));
    Value::Array(
        tracks
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "instreamId": t.instream_id,
                    "language": t.language,
                    "name": t.name,
                })
            })
            .collect(),
    )
}
