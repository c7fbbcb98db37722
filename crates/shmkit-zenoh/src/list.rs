//! `--list`: the channels that reachable bridges export, from their descriptions
//! (every exporting bridge answers queries on `shmkit/meta/KEY`).

use std::time::Duration;

use shmkit::typed::TypeTag;
use zenoh::Session;

use crate::wire::{Export, META_PREFIX};

/// Asks every reachable bridge, for up to `timeout` while nobody has answered (peers
/// may still be connecting), and prints what they export.
pub async fn run(session: &Session, timeout: Duration, json: bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut exports: Vec<Export> = Vec::new();
    loop {
        let replies = session
            .get(format!("{META_PREFIX}/**"))
            .timeout(timeout)
            .await
            .map_err(|e| format!("zenoh: {e}"))?;
        while let Ok(reply) = replies.recv_async().await {
            if let Ok(sample) = reply.result() {
                if let Ok(e) = serde_json::from_slice::<Export>(&sample.payload().to_bytes()) {
                    exports.push(e);
                }
            }
        }
        if !exports.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exports.sort_by(|a, b| (&a.key, &a.host, a.pid).cmp(&(&b.key, &b.host, b.pid)));
    exports.dedup();
    if json {
        let text = serde_json::to_string_pretty(&exports).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    if exports.is_empty() {
        println!("no exports found within {:.1} s", timeout.as_secs_f64());
        return Ok(());
    }
    let rows: Vec<[String; 6]> = exports
        .iter()
        .map(|e| {
            let shape = match e.slots {
                Some(slots) => format!("{slots} slots x {} B, {}", e.max_message, e.overflow),
                None => format!("max {} B, {}", e.max_message, e.overflow),
            };
            [
                e.key.clone(),
                e.kind.clone(),
                shape,
                e.message_type.map_or("-".into(), |t| TypeTag::from(t).to_string()),
                format!("{} (pid {})", e.host, e.pid),
                e.local.clone(),
            ]
        })
        .collect();
    let headers = ["KEY", "KIND", "SHAPE", "TYPE", "BRIDGE", "LOCAL"];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    Ok(())
}
