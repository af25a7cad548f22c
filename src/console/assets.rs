//! The console's files, compiled into the binary: no CDN, nothing fetched at run time.
//!
//! Each file's ETag is a hash of its bytes computed at compile time, so a browser revalidates
//! with `If-None-Match` and gets `304` until the binary changes.

/// One compiled-in file.
pub struct Asset {
    /// File name under `/ui/`.
    pub name: &'static str,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type,
            body,
            hash: fnv1a(body),
        }
    }

    /// The strong ETag (quoted).
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the console serves; the first is the page itself (`/ui/`).
pub static ASSETS: [Asset; 9] = [
    Asset::new("index.html", HTML, include_bytes!("web/index.html")),
    Asset::new("console.css", CSS, include_bytes!("web/console.css")),
    Asset::new("app.js", JS, include_bytes!("web/app.js")),
    Asset::new("server.js", JS, include_bytes!("web/server.js")),
    Asset::new("chart.js", JS, include_bytes!("web/chart.js")),
    Asset::new("sse.js", JS, include_bytes!("web/sse.js")),
    Asset::new("streams.js", JS, include_bytes!("web/streams.js")),
    Asset::new("admin.js", JS, include_bytes!("web/admin.js")),
    Asset::new("favicon.svg", SVG, include_bytes!("web/favicon.svg")),
];

/// What a path under `/ui` resolves to.
pub enum Lookup {
    /// `/ui` without the slash: redirect to this (relative) location so relative asset URLs work,
    /// also behind a proxy that mounts the server under a prefix.
    Redirect(&'static str),
    /// A file.
    Asset(&'static Asset),
    /// Nothing there.
    Missing,
}

/// Resolves a request path (`/ui`, `/ui/`, `/ui/<name>`).
pub fn lookup(path: &str) -> Lookup {
    let Some(rest) = path.strip_prefix("/ui") else {
        return Lookup::Missing;
    };
    let name = match rest {
        "" => return Lookup::Redirect("ui/"),
        "/" => "index.html",
        _ => match rest.strip_prefix('/') {
            Some(name) => name,
            None => return Lookup::Missing,
        },
    };
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or(Lookup::Missing, Lookup::Asset)
}

/// FNV-1a, 64 bits: a stable content hash that can run in a `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget for everything the console ships.
    const BUDGET: usize = 150 * 1024;

    #[test]
    fn paths_resolve_and_the_budget_holds() {
        assert!(matches!(lookup("/ui"), Lookup::Redirect("ui/")));
        assert!(matches!(lookup("/ui/"), Lookup::Asset(a) if a.name == "index.html"));
        assert!(matches!(lookup("/ui/app.js"), Lookup::Asset(a) if a.content_type == JS));
        assert!(matches!(lookup("/ui/nope.js"), Lookup::Missing));
        assert!(matches!(lookup("/ui/../stats"), Lookup::Missing));
        assert!(matches!(lookup("/uix"), Lookup::Missing));
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < BUDGET, "console assets are {total} bytes");
        let mut tags: Vec<String> = ASSETS.iter().map(Asset::etag).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len(), "distinct files, distinct ETags");
    }

    #[test]
    fn every_script_the_page_imports_is_served() {
        // A module imported by a script but missing here would only fail in a browser.
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split('"').nth(1).unwrap();
                let name = target.strip_prefix("./").unwrap();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {target}",
                    asset.name
                );
            }
        }
    }
}
