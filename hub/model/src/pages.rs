//! The web UI's pages, and which of its two builds draws each. The home (`/`, a device, the
//! bridges, an invite) is one wasm; managing the home (automations, sharing, tenancies) is
//! another, under `/manage/`. A phone opening the home downloads only the first. The hub
//! reads this list to answer a page's path with the right build, and the UI to know which
//! links leave its own build (a full page load) and which it routes by itself.

/// The paths drawn by the management build; every other page is the home build's.
pub const MANAGED: [&str; 3] = ["/automations", "/sharing", "/people"];

/// Where Trunk puts the management build, under the UI's files, and where it is served.
pub const MANAGE_DIR: &str = "manage";

/// Whether `path` (as in a URL, with its leading `/`) is one of the management build's pages.
pub fn managed(path: &str) -> bool {
    MANAGED.iter().any(|page| path.strip_prefix(page).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_their_subpaths_are_managed_and_nothing_else() {
        for path in ["/automations", "/sharing", "/people", "/people/3", "/automations/"] {
            assert!(managed(path), "{path}");
        }
        for path in ["/", "", "/devices/abc", "/bridges", "/invite", "/peoplex", "/api/people", "/automationsx/y"] {
            assert!(!managed(path), "{path}");
        }
    }
}
