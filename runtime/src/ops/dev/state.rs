//! The small file `wharf dev` leaves next to its config while it runs,
//! naming its server's URL, so that `wharf dlq -c wharf.toml` finds the
//! server without `--url`. It is removed when dev stops.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The state file for a config: `.wharf.toml.dev` beside `wharf.toml`.
pub fn path_for(config: &Path) -> PathBuf {
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "wharf.toml".into());
    config.with_file_name(format!(".{name}.dev"))
}

#[derive(Debug, Deserialize)]
struct State {
    url: String,
    pid: u32,
}

/// The state file of a running `wharf dev`; removed on drop, if it is
/// still this process's.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Writes the server's URL next to `config`.
    pub fn write(config: &Path, url: &str) -> std::io::Result<StateFile> {
        let path = path_for(config);
        let text = format!(
            "# Written by `wharf dev` while it runs, for `wharf dlq`; removed when it stops.\n\
             url = \"{url}\"\npid = {}\n",
            std::process::id()
        );
        std::fs::write(&path, text)?;
        Ok(StateFile { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // Another dev for the same config may have written it since.
        if read(&self.path).is_some_and(|s| s.pid == std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read(path: &Path) -> Option<State> {
    toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The URL and pid of the `wharf dev` running with `config`, if its state
/// file is there, with the file's path.
pub fn running(config: &Path) -> Option<(String, u32, PathBuf)> {
    let path = path_for(config);
    let state = read(&path)?;
    Some((state.url, state.pid, path))
}

/// Connects with `cli` over the config's `[nats]` table; with no URL in
/// either (or `NATS_URL`), to the server of a `wharf dev` running with
/// `config`, saying so if that server cannot be reached.
pub async fn connect(
    config: Option<&crate::config::Config>,
    cli: crate::config::Connection,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let mut connection = match config {
        Some(c) => c.nats.clone().overlaid(cli),
        None => cli,
    };
    let mut from_dev = None;
    if let (Some(c), None) = (config, &connection.url)
        && let Some((url, pid, file)) = running(&c.path)
    {
        connection.url = Some(url);
        from_dev = Some((pid, file));
    }
    crate::connect::connect(&connection, name)
        .await
        .map_err(|e| match from_dev {
            Some((pid, file)) => e.context(format!(
                "the URL is from {}, which `wharf dev` (pid {pid}) wrote; is it still running?",
                file.display()
            )),
            None => e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_url_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("wharf.toml");
        assert!(running(&config).is_none());
        let file = StateFile::write(&config, "nats://127.0.0.1:4222").unwrap();
        assert_eq!(file.path(), dir.path().join(".wharf.toml.dev"));
        let (url, pid, _) = running(&config).unwrap();
        assert_eq!(
            (url.as_str(), pid),
            ("nats://127.0.0.1:4222", std::process::id())
        );
        drop(file);
        assert!(running(&config).is_none());
    }
}
