//! The OpenAPI 3 document of `/api/v1` (hand-written in `openapi.json`; a
//! test keeps it and the router in step, route by route).

pub const DOCUMENT: &str = include_str!("openapi.json");

/// (METHOD, path) of every operation the document describes.
pub fn operations() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
        for (path, ops) in paths {
            for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_api_route_is_documented_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut routes: Vec<(String, String)> = crate::web::route_table()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/"))
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        routes.sort();
        let documented = super::operations();
        let missing: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|d| !routes.contains(d)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "not in openapi.json: {missing:?}; documented but not routed: {extra:?}"
        );
        assert!(routes.len() > 20, "{routes:?}");
    }
}
