//! The Git repositories of projects: bare repositories under
//! `<data-dir>/repositories/<project-id>.git`, driven by the real `git`.
//!
//! Commits made through the Files API are built with plumbing commands on a
//! private index, so no work tree is ever checked out. Every change to a
//! repository (Files API commit or `git push`) runs under that repository's
//! lock, so the refs read before and after it describe exactly that change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Error)]
pub enum GitError {
    #[error("git {command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("could not run git: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("A file with this name already exists")]
    FileExists,
    #[error("A file with this name doesn't exist")]
    FileMissing,
    #[error("You can only create or edit files when you are on a branch: branch {0:?} does not exist")]
    NoBranch(String),
    #[error("the branch moved while committing; retry")]
    Race,
    /// The repositories' disk is full; git wrote nothing it kept.
    #[error("the repositories' disk is full: {0}")]
    DiskFull(String),
}

/// One ref that a change moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    pub ref_name: String,
    pub before: String,
    pub after: String,
}

/// A file as read from a commit.
#[derive(Clone, Debug)]
pub struct FileBlob {
    pub content: Vec<u8>,
    pub blob_id: String,
    pub commit_id: String,
    pub last_commit_id: String,
}

/// What a Files API commit does to one path.
#[derive(Clone, Debug)]
pub enum FileChange {
    Create(Vec<u8>),
    Update(Vec<u8>),
    Delete,
}

/// One Files API commit: a change to one path on a branch.
#[derive(Clone, Debug)]
pub struct FileCommit<'a> {
    pub branch: &'a str,
    /// Where a missing branch starts from.
    pub start_branch: Option<&'a str>,
    pub path: &'a str,
    pub change: FileChange,
    pub message: &'a str,
    pub author: &'a Author,
}

/// Who a commit is by.
#[derive(Clone, Debug)]
pub struct Author {
    pub name: String,
    pub email: String,
}

#[derive(Debug)]
pub struct Repos {
    root: PathBuf,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Repos {
    pub fn new(root: PathBuf) -> std::io::Result<Repos> {
        std::fs::create_dir_all(&root)?;
        Ok(Repos {
            root,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The repository directory's name under the root.
    pub fn dir_name(project_id: i64) -> String {
        format!("{project_id}.git")
    }

    pub fn path(&self, project_id: i64) -> PathBuf {
        self.root.join(Self::dir_name(project_id))
    }

    /// The lock that serialises changes to one repository.
    pub fn lock(&self, project_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock();
        locks.entry(project_id).or_default().clone()
    }

    pub async fn create(&self, project_id: i64, default_branch: &str) -> Result<(), GitError> {
        let path = self.path(project_id);
        if path.join("HEAD").exists() {
            return Ok(());
        }
        run_git(
            &self.root,
            &[
                "init",
                "--quiet",
                "--bare",
                &format!("--initial-branch={default_branch}"),
                &Self::dir_name(project_id),
            ],
            &[],
            None,
        )
        .await?;
        Ok(())
    }

    pub async fn remove(&self, project_id: i64) -> std::io::Result<()> {
        let path = self.path(project_id);
        match tokio::fs::remove_dir_all(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// All refs and the commits they point at.
    pub async fn refs(&self, project_id: i64) -> Result<BTreeMap<String, String>, GitError> {
        let out = self
            .git(
                project_id,
                &["for-each-ref", "--format=%(objectname) %(refname)"],
                &[],
                None,
            )
            .await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(sha, name)| (name.to_string(), sha.to_string()))
            .collect())
    }

    /// The commit a branch or other revision points at, if it exists.
    pub async fn resolve(&self, project_id: i64, rev: &str) -> Result<Option<String>, GitError> {
        match self
            .git(
                project_id,
                &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")],
                &[],
                None,
            )
            .await
        {
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out).trim().to_string())),
            Err(GitError::Command { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The commit a branch points at, read from its loose ref file or the
    /// repository's `packed-refs` (no git process: the agents' sessions
    /// ask this often, and every process kas starts costs it in proportion
    /// to the connections it holds, closed in the child at `exec`), else
    /// from git (a symbolic ref, the reftable format).
    pub async fn branch_tip(&self, project_id: i64, branch: &str) -> Result<Option<String>, GitError> {
        let repo = self.path(project_id);
        let name = format!("refs/heads/{branch}");
        if let Ok(text) = tokio::fs::read_to_string(repo.join(&name)).await {
            if let Some(id) = object_id(text.trim()) {
                return Ok(Some(id));
            }
            return self.resolve(project_id, &name).await;
        }
        if !tokio::fs::try_exists(repo.join("reftable")).await.unwrap_or(true) {
            match tokio::fs::read_to_string(repo.join("packed-refs")).await {
                Ok(packed) => return Ok(packed_ref(&packed, &name)),
                // Neither file: the branch does not exist (yet), in a
                // repository that does.
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound
                        && tokio::fs::try_exists(repo.join("HEAD")).await.unwrap_or(false) =>
                {
                    return Ok(None);
                }
                Err(_) => {}
            }
        }
        self.resolve(project_id, &name).await
    }

    /// Reads a file at a revision; `None` when the revision or file is absent.
    pub async fn read_file(&self, project_id: i64, rev: &str, path: &str) -> Result<Option<FileBlob>, GitError> {
        let Some(commit_id) = self.resolve(project_id, rev).await? else {
            return Ok(None);
        };
        let blob_id = match self
            .git(
                project_id,
                &["rev-parse", "--verify", "--quiet", &format!("{commit_id}:{path}")],
                &[],
                None,
            )
            .await
        {
            Ok(out) => String::from_utf8_lossy(&out).trim().to_string(),
            Err(GitError::Command { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let kind = self.git(project_id, &["cat-file", "-t", &blob_id], &[], None).await?;
        if kind.trim_ascii() != b"blob" {
            return Ok(None);
        }
        let content = self.git(project_id, &["cat-file", "blob", &blob_id], &[], None).await?;
        let last = self
            .git(
                project_id,
                &["log", "-1", "--format=%H", &commit_id, "--", path],
                &[],
                None,
            )
            .await?;
        Ok(Some(FileBlob {
            content,
            blob_id,
            commit_id,
            last_commit_id: String::from_utf8_lossy(&last).trim().to_string(),
        }))
    }

    /// Every file named `name` one directory below `dir` at `commit`, by
    /// that directory's name (`.gitlab/agents/<agent>/config.yaml` for all
    /// agents at once): two git processes whatever their number.
    pub async fn files_below(
        &self,
        project_id: i64,
        commit: &str,
        dir: &str,
        name: &str,
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, GitError> {
        let mut found = std::collections::HashMap::new();
        let listing = match self
            .git(project_id, &["ls-tree", "-r", "-z", commit, "--", dir], &[], None)
            .await
        {
            Ok(out) => out,
            Err(GitError::Command { .. }) => return Ok(found),
            Err(e) => return Err(e),
        };
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let suffix = format!("/{name}");
        let mut wanted: Vec<(String, String)> = Vec::new();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let fields: Vec<&str> = meta.split(' ').collect();
            let Some(sub) = path.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(&suffix)) else {
                continue;
            };
            if fields.get(1) == Some(&"blob") && !sub.contains('/') {
                wanted.push((sub.to_string(), fields[2].to_string()));
            }
        }
        if wanted.is_empty() {
            return Ok(found);
        }
        let request: String = wanted.iter().map(|(_, blob)| format!("{blob}\n")).collect();
        let out = self
            .git(project_id, &["cat-file", "--batch"], &[], Some(request.as_bytes()))
            .await?;
        // `<id> blob <size>\n<content>\n`, in the order asked.
        let mut rest = &out[..];
        for (sub, _) in wanted {
            let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                break;
            };
            let header = String::from_utf8_lossy(&rest[..end]).to_string();
            rest = &rest[end + 1..];
            let size: usize = header.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if rest.len() < size {
                break;
            }
            found.insert(sub, rest[..size].to_vec());
            rest = rest.get(size + 1..).unwrap_or_default();
        }
        Ok(found)
    }

    /// The names of the directories under `dir` at a revision (empty when
    /// the revision or directory is absent).
    pub async fn list_dirs(&self, project_id: i64, rev: &str, dir: &str) -> Result<Vec<String>, GitError> {
        let Some(commit_id) = self.resolve(project_id, rev).await? else {
            return Ok(Vec::new());
        };
        let listing = match self
            .git(
                project_id,
                &["ls-tree", "-d", "--name-only", &format!("{commit_id}:{dir}")],
                &[],
                None,
            )
            .await
        {
            Ok(out) => out,
            Err(GitError::Command { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(String::from_utf8_lossy(&listing).lines().map(str::to_string).collect())
    }

    /// Commits one file change to `branch`; the caller holds the lock.
    /// A missing branch is created from `start_branch`, or as the first
    /// commit of an empty repository.
    pub async fn commit_file(&self, project_id: i64, commit: FileCommit<'_>) -> Result<RefUpdate, GitError> {
        let FileCommit {
            branch,
            start_branch,
            path,
            change,
            message,
            author,
        } = commit;
        let ref_name = format!("refs/heads/{branch}");
        let current = self.resolve(project_id, &ref_name).await?;
        let parent = match (&current, start_branch) {
            (Some(sha), _) => Some(sha.clone()),
            (None, Some(start)) => Some(
                self.resolve(project_id, &format!("refs/heads/{start}"))
                    .await?
                    .ok_or_else(|| GitError::NoBranch(start.to_string()))?,
            ),
            (None, None) if self.refs(project_id).await?.is_empty() => None,
            (None, None) => return Err(GitError::NoBranch(branch.to_string())),
        };
        let exists = match &parent {
            Some(parent) => self.read_file(project_id, parent, path).await?.is_some(),
            None => false,
        };
        match (&change, exists) {
            (FileChange::Create(_), true) => return Err(GitError::FileExists),
            (FileChange::Update(_) | FileChange::Delete, false) => return Err(GitError::FileMissing),
            _ => {}
        }

        let index = tempfile_path(&self.path(project_id));
        let env = [("GIT_INDEX_FILE", index.to_string_lossy().to_string())];
        let result = async {
            match &parent {
                Some(parent) => self.git(project_id, &["read-tree", parent], &env, None).await?,
                None => self.git(project_id, &["read-tree", "--empty"], &env, None).await?,
            };
            match &change {
                FileChange::Create(content) | FileChange::Update(content) => {
                    let blob = self
                        .git(project_id, &["hash-object", "-w", "--stdin"], &env, Some(content))
                        .await?;
                    let blob = String::from_utf8_lossy(&blob).trim().to_string();
                    self.git(
                        project_id,
                        &["update-index", "--add", "--cacheinfo", &format!("100644,{blob},{path}")],
                        &env,
                        None,
                    )
                    .await?;
                }
                FileChange::Delete => {
                    // Mode 0 removes the entry; unlike --force-remove this
                    // needs no work tree.
                    let line = format!("0 {ZERO_SHA}\t{path}\n");
                    self.git(
                        project_id,
                        &["update-index", "--index-info"],
                        &env,
                        Some(line.as_bytes()),
                    )
                    .await?;
                }
            }
            let tree = self.git(project_id, &["write-tree"], &env, None).await?;
            let tree = String::from_utf8_lossy(&tree).trim().to_string();
            let mut args = vec!["commit-tree".to_string(), tree, "-m".to_string(), message.to_string()];
            if let Some(parent) = &parent {
                args.push("-p".into());
                args.push(parent.clone());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let author_env = [
                ("GIT_AUTHOR_NAME", author.name.clone()),
                ("GIT_AUTHOR_EMAIL", author.email.clone()),
                ("GIT_COMMITTER_NAME", author.name.clone()),
                ("GIT_COMMITTER_EMAIL", author.email.clone()),
            ];
            let commit = self.git(project_id, &args, &author_env, None).await?;
            Ok::<_, GitError>(String::from_utf8_lossy(&commit).trim().to_string())
        }
        .await;
        let _ = tokio::fs::remove_file(&index).await;
        let commit = result?;
        let before = current.unwrap_or_else(|| ZERO_SHA.to_string());
        self.git(project_id, &["update-ref", &ref_name, &commit, &before], &[], None)
            .await
            .map_err(|_| GitError::Race)?;
        Ok(RefUpdate {
            ref_name,
            before,
            after: commit,
        })
    }

    async fn git(
        &self,
        project_id: i64,
        args: &[&str],
        env: &[(&str, String)],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, GitError> {
        run_git(&self.path(project_id), args, env, stdin).await
    }
}

/// The refs that differ between two snapshots (created, moved or deleted).
pub fn ref_updates(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<RefUpdate> {
    let mut updates = Vec::new();
    for (name, new) in after {
        match before.get(name) {
            Some(old) if old == new => {}
            old => updates.push(RefUpdate {
                ref_name: name.clone(),
                before: old.cloned().unwrap_or_else(|| ZERO_SHA.to_string()),
                after: new.clone(),
            }),
        }
    }
    for (name, old) in before {
        if !after.contains_key(name) {
            updates.push(RefUpdate {
                ref_name: name.clone(),
                before: old.clone(),
                after: ZERO_SHA.to_string(),
            });
        }
    }
    updates
}

fn tempfile_path(repo: &Path) -> PathBuf {
    repo.join(format!("index.glagent-{}", rand_suffix()))
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

async fn run_git(dir: &Path, args: &[&str], env: &[(&str, String)], stdin: Option<&[u8]>) -> Result<Vec<u8>, GitError> {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).await?;
        drop(pipe);
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.contains("No space left on device") || stderr.contains("Out of diskspace") {
            return Err(GitError::DiskFull(stderr));
        }
        return Err(GitError::Command {
            command: args.first().copied().unwrap_or_default().to_string(),
            stderr,
        });
    }
    Ok(output.stdout)
}

/// `text` when it is a full object id (40 hex digits).
fn object_id(text: &str) -> Option<String> {
    (text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_string())
}

/// The object `name` points at in a `packed-refs` file.
fn packed_ref(packed: &str, name: &str) -> Option<String> {
    packed
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('^'))
        .find_map(|line| match line.split_once(' ') {
            Some((id, refname)) if refname == name => object_id(id),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_updates_cover_create_move_delete() {
        let before = BTreeMap::from([("refs/heads/a".into(), "1".into()), ("refs/heads/b".into(), "2".into())]);
        let after = BTreeMap::from([("refs/heads/a".into(), "3".into()), ("refs/heads/c".into(), "4".into())]);
        let updates = ref_updates(&before, &after);
        assert_eq!(updates.len(), 3);
        assert!(updates.contains(&RefUpdate {
            ref_name: "refs/heads/a".into(),
            before: "1".into(),
            after: "3".into()
        }));
        assert!(updates.contains(&RefUpdate {
            ref_name: "refs/heads/c".into(),
            before: ZERO_SHA.into(),
            after: "4".into()
        }));
        assert!(updates.contains(&RefUpdate {
            ref_name: "refs/heads/b".into(),
            before: "2".into(),
            after: ZERO_SHA.into()
        }));
    }

    fn commit<'a>(
        branch: &'a str,
        path: &'a str,
        change: FileChange,
        message: &'a str,
        author: &'a Author,
    ) -> FileCommit<'a> {
        FileCommit {
            branch,
            start_branch: None,
            path,
            change,
            message,
            author,
        }
    }

    #[tokio::test]
    async fn a_branch_tip_is_read_from_its_loose_ref_or_packed_refs_and_a_missing_branch_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::new(dir.path().to_path_buf()).unwrap();
        repos.create(1, "main").await.unwrap();
        assert_eq!(repos.branch_tip(1, "main").await.unwrap(), None, "no commit yet");
        let author = Author {
            name: "A".into(),
            email: "a@example.com".into(),
        };
        let first = repos
            .commit_file(
                1,
                commit("main", "f.txt", FileChange::Create(b"one".to_vec()), "add", &author),
            )
            .await
            .unwrap();
        assert_eq!(
            repos.branch_tip(1, "main").await.unwrap().as_deref(),
            Some(first.after.as_str())
        );
        // As `git gc` leaves it: the branch only in packed-refs.
        let repo = dir.path().join("1.git");
        let packed = std::process::Command::new("git")
            .args(["pack-refs", "--all", "--prune"])
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(packed.success());
        assert!(!repo.join("refs/heads/main").exists(), "the loose ref is gone");
        assert_eq!(
            repos.branch_tip(1, "main").await.unwrap().as_deref(),
            Some(first.after.as_str())
        );
        assert_eq!(repos.branch_tip(1, "other").await.unwrap(), None);
        assert_eq!(packed_ref("# pack-refs with: peeled\n", "refs/heads/main"), None);
        let line = format!(
            "{} refs/heads/main-2\n{} refs/heads/main\n^{}\n",
            ZERO_SHA, first.after, ZERO_SHA
        );
        assert_eq!(
            packed_ref(&line, "refs/heads/main").as_deref(),
            Some(first.after.as_str())
        );
    }

    #[tokio::test]
    async fn commit_read_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::new(dir.path().to_path_buf()).unwrap();
        repos.create(1, "main").await.unwrap();
        let author = Author {
            name: "A".into(),
            email: "a@example.com".into(),
        };
        let first = repos
            .commit_file(
                1,
                FileCommit {
                    branch: "main",
                    start_branch: None,
                    path: "dir/f.txt",
                    change: FileChange::Create(b"one".to_vec()),
                    message: "add",
                    author: &author,
                },
            )
            .await
            .unwrap();
        assert_eq!(first.before, ZERO_SHA);
        let blob = repos.read_file(1, "main", "dir/f.txt").await.unwrap().unwrap();
        assert_eq!(blob.content, b"one");
        assert_eq!(blob.last_commit_id, first.after);
        let again = repos
            .commit_file(
                1,
                FileCommit {
                    branch: "main",
                    start_branch: None,
                    path: "dir/f.txt",
                    change: FileChange::Create(b"x".to_vec()),
                    message: "add",
                    author: &author,
                },
            )
            .await;
        assert!(matches!(again, Err(GitError::FileExists)));
        repos
            .commit_file(
                1,
                FileCommit {
                    branch: "main",
                    start_branch: None,
                    path: "dir/f.txt",
                    change: FileChange::Update(b"two".to_vec()),
                    message: "edit",
                    author: &author,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            repos.read_file(1, "main", "dir/f.txt").await.unwrap().unwrap().content,
            b"two"
        );
        repos
            .commit_file(1, commit("main", "dir/f.txt", FileChange::Delete, "rm", &author))
            .await
            .unwrap();
        assert!(repos.read_file(1, "main", "dir/f.txt").await.unwrap().is_none());
        let missing = repos
            .commit_file(1, commit("other", "x", FileChange::Create(vec![]), "m", &author))
            .await;
        assert!(matches!(missing, Err(GitError::NoBranch(_))));
    }

    #[tokio::test]
    async fn every_agents_file_is_read_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let repos = Repos::new(dir.path().to_path_buf()).unwrap();
        repos.create(1, "main").await.unwrap();
        let author = Author {
            name: "A".into(),
            email: "a@example.com".into(),
        };
        let mut last = String::new();
        for (path, content) in [
            (".gitlab/agents/a/config.yaml", "a: 1\n"),
            (".gitlab/agents/b/config.yaml", ""),
            (".gitlab/agents/b/other.yaml", "no"),
            (".gitlab/agents/c/deeper/config.yaml", "no"),
            ("config.yaml", "no"),
        ] {
            let change = FileChange::Create(content.as_bytes().to_vec());
            last = repos
                .commit_file(1, commit("main", path, change, "add", &author))
                .await
                .unwrap()
                .after;
        }
        let files = repos
            .files_below(1, &last, ".gitlab/agents", "config.yaml")
            .await
            .unwrap();
        let mut names: Vec<&String> = files.keys().collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(files["a"], b"a: 1\n");
        assert_eq!(files["b"], b"");
        assert!(
            repos
                .files_below(1, &last, "nowhere", "config.yaml")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
