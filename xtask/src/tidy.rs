//! `cargo xtask tidy`: checks on the source tree that need no compiler, in
//! the manner of rust-analyzer's tidy tests. Each guards something review
//! keeps missing:
//!
//! - every crate root (`src/lib.rs`, `src/main.rs`) opens with a `//!` doc
//!   saying why the crate exists;
//! - no `dbg!` is committed;
//! - no integration-test file (`crates/*/tests/**.rs`) is over
//!   [`MAX_TEST_FILE_LINES`] lines, so test files stay split by behaviour;
//! - no `use` cycle between the top-level modules of a crate, so that
//!   dependencies inside a crate point one way, as they do between crates.
//!
//! The module graph is read from the text, not from the compiler: a small
//! lexer drops comments, strings and `#[cfg(test)]` modules, and every path
//! that starts with `crate::` (or with as many `super::` as lead back to the
//! crate root) names the top-level module it reaches into.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The most lines an integration-test file may have.
const MAX_TEST_FILE_LINES: usize = 800;

/// Which top-level modules each top-level module refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

pub fn tidy(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files)?;
    rust_files(&root.join("xtask/src"), &mut files)?;
    for file in &files {
        let text = read(file)?;
        let shown = shown(root, file);
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_root = matches!(name, "lib.rs" | "main.rs") && file.parent().is_some_and(|p| p.ends_with("src"));
        if is_root && !text.trim_start().starts_with("//!") {
            problems.push(format!("{shown}: crate root has no //! doc saying why it exists"));
        }
        if text.contains(concat!("dbg", "!(")) {
            problems.push(format!("{shown}: dbg! left in"));
        }
        if is_integration_test(root, file) {
            problems.extend(test_file_too_long(&shown, &text));
        }
    }
    let crates = crate_dirs(root)?;
    for dir in &crates {
        let graph = module_graph(&dir.join("src"))?;
        for cycle in cycles(&graph) {
            problems.push(format!("{}: {cycle}", shown(root, dir)));
        }
    }
    if problems.is_empty() {
        println!(
            "tidy: {} files and the module graphs of {} crates checked, all clean",
            files.len(),
            crates.len()
        );
        Ok(())
    } else {
        bail!("tidy found problems:\n{}", problems.join("\n"))
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// A path as the messages show it: relative to the workspace root.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// `crates/<name>/tests/**.rs`.
fn is_integration_test(root: &Path, file: &Path) -> bool {
    let Ok(relative) = file.strip_prefix(root.join("crates")) else {
        return false;
    };
    relative.components().nth(1).is_some_and(|c| c.as_os_str() == "tests")
}

fn test_file_too_long(shown: &str, text: &str) -> Option<String> {
    let lines = text.lines().count();
    (lines > MAX_TEST_FILE_LINES)
        .then(|| format!("{shown}: {lines} lines (at most {MAX_TEST_FILE_LINES}): split it by behaviour"))
}

/// Every directory under `crates/` with a `src/`, and xtask.
fn crate_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let crates = root.join("crates");
    let mut dirs = std::fs::read_dir(&crates)
        .with_context(|| format!("reading {}", crates.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    dirs.retain(|d| d.join("src").is_dir());
    dirs.sort();
    dirs.push(root.join("xtask"));
    Ok(dirs)
}

/// The graph of a crate's top-level modules: those its root (`lib.rs`, or
/// `main.rs` for a binary-only crate) declares, each made of `<m>.rs`
/// and everything under `<m>/`.
fn module_graph(src: &Path) -> Result<Graph> {
    let crate_root = [src.join("lib.rs"), src.join("main.rs")]
        .into_iter()
        .find(|f| f.is_file());
    let Some(crate_root) = crate_root else {
        return Ok(Graph::new());
    };
    let modules: BTreeSet<String> = scan(&read(&crate_root)?, 0).modules.into_iter().collect();
    let mut graph = Graph::new();
    for module in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files)?;
        }
        let mut scanned = Vec::new();
        for file in files {
            let relative = file.strip_prefix(src).expect("under src");
            let found = scan(&read(&file)?, module_depth(relative));
            scanned.push((file, found));
        }
        // Files of out-of-line `#[cfg(test)] mod t;` are test code too.
        let test_paths: Vec<PathBuf> = scanned
            .iter()
            .flat_map(|(file, found)| found.test_modules.iter().map(|t| children_dir(file).join(t)))
            .collect();
        let is_test = |file: &Path| {
            test_paths
                .iter()
                .any(|t| file.starts_with(t) || file == t.with_extension("rs"))
        };
        let uses = graph.entry(module.clone()).or_default();
        for (file, found) in &scanned {
            if !is_test(file) {
                uses.extend(
                    found
                        .uses
                        .iter()
                        .filter(|n| *n != module && modules.contains(*n))
                        .cloned(),
                );
            }
        }
    }
    Ok(graph)
}

/// How deep in the crate's module tree a file is: `m.rs` and `m/mod.rs`
/// are 1, `m/x.rs` is 2.
fn module_depth(relative: &Path) -> usize {
    let components = relative.components().count();
    if relative.file_name().is_some_and(|n| n == "mod.rs") {
        components - 1
    } else {
        components
    }
}

/// Where the files of a file's child modules live.
fn children_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    match file.file_stem() {
        Some(stem) if stem != "mod" => parent.join(stem),
        _ => parent.to_path_buf(),
    }
}

/// One cycle of a strongly connected component, shown as
/// `module cycle a -> b -> a`.
#[derive(Debug, PartialEq)]
struct Cycle {
    /// A closed path: the first module is also the last.
    path: Vec<String>,
    /// The component's modules the path does not pass through.
    others: Vec<String>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "module cycle {}", self.path.join(" -> "))?;
        if !self.others.is_empty() {
            write!(f, " (also entangled: {})", self.others.join(", "))?;
        }
        Ok(())
    }
}

/// One cycle per strongly connected component of more than one module,
/// the shortest through the component's first module by name.
fn cycles(graph: &Graph) -> Vec<Cycle> {
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to))
        .map(String::as_str)
        .collect();
    let reach: BTreeMap<&str, BTreeSet<&str>> = nodes.iter().map(|&n| (n, reachable(graph, n))).collect();
    let mut placed = BTreeSet::new();
    let mut cycles = Vec::new();
    for &start in &nodes {
        if placed.contains(start) || !reach[start].contains(start) {
            continue;
        }
        let component: BTreeSet<&str> = reach[start]
            .iter()
            .copied()
            .filter(|&n| reach[n].contains(start))
            .collect();
        placed.extend(component.iter().copied());
        let path = shortest_cycle(graph, start, &component);
        let others = component
            .iter()
            .filter(|&&n| !path.iter().any(|p| p == n))
            .map(|n| n.to_string())
            .collect();
        cycles.push(Cycle { path, others });
    }
    cycles
}

/// The modules reachable from `from` by one edge or more.
fn reachable<'a>(graph: &'a Graph, from: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = successors(graph, from).collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(successors(graph, n));
        }
    }
    seen
}

fn successors<'a>(graph: &'a Graph, from: &str) -> impl Iterator<Item = &'a str> {
    graph.get(from).into_iter().flatten().map(String::as_str)
}

/// Breadth-first inside the component, from `start` back to itself.
fn shortest_cycle(graph: &Graph, start: &str, component: &BTreeSet<&str>) -> Vec<String> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for next in successors(graph, n).filter(|m| component.contains(m)) {
            if next == start {
                let mut path = vec![start.to_string()];
                let mut at = n;
                while at != start {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(start.to_string());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(next) {
                came_from.insert(next, n);
                queue.push_back(next);
            }
        }
    }
    unreachable!("{start} is in a cycle")
}

/// What one file says about modules, tests left out.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    /// Modules declared at the top of the file (`mod m;`, `pub mod m { .. }`).
    modules: Vec<String>,
    /// Out-of-line `#[cfg(test)] mod t;`, whose files are test code.
    test_modules: Vec<String>,
    /// Names right below the crate root that paths in the file reach.
    uses: BTreeSet<String>,
}

/// Scans a file `depth` modules below the crate root (see
/// [`module_depth`]), so that `super::` paths can be followed.
fn scan(text: &str, depth: usize) -> Scan {
    let tokens = tokens(text);
    let mut found = Scan::default();
    let mut braces = 0usize;
    // The brace depth at which each enclosing inline `mod x {` opened.
    let mut inline_modules: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(after) = test_module(&tokens, i, &mut found.test_modules) {
            i = after;
            continue;
        }
        let path_start = i == 0 || tokens[i - 1] != Token::PathSep;
        match &tokens[i] {
            Token::Punct('{') => braces += 1,
            Token::Punct('}') => {
                braces = braces.saturating_sub(1);
                if inline_modules.last() == Some(&braces) {
                    inline_modules.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let Some(Token::Ident(name)) = tokens.get(i + 1) {
                    if braces == 0 {
                        found.modules.push(name.clone());
                    }
                    if tokens.get(i + 2) == Some(&Token::Punct('{')) {
                        inline_modules.push(braces);
                        braces += 1;
                        i += 3;
                        continue;
                    }
                }
            }
            Token::Ident(word) if word == "crate" && path_start && tokens.get(i + 1) == Some(&Token::PathSep) => {
                found.uses.extend(path_heads(&tokens, i + 2));
            }
            Token::Ident(word) if word == "super" && path_start => {
                let mut j = i;
                let mut up = 0;
                while is_ident(&tokens, j, "super") && tokens.get(j + 1) == Some(&Token::PathSep) {
                    up += 1;
                    j += 2;
                }
                if up > 0 && up == depth + inline_modules.len() {
                    found.uses.extend(path_heads(&tokens, j));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// At `#[cfg(test)]` on a module, returns where the module ends (and
/// notes it if it is out of line); at `#![cfg(test)]`, the end of the file.
fn test_module(tokens: &[Token], i: usize, test_modules: &mut Vec<String>) -> Option<usize> {
    let punct = |j: usize, c: char| tokens.get(j) == Some(&Token::Punct(c));
    let ident = |j: usize, word: &str| is_ident(tokens, j, word);
    if !punct(i, '#') {
        return None;
    }
    let mut j = i + 1;
    if punct(j, '!') {
        let is_cfg_test = punct(j + 1, '[')
            && ident(j + 2, "cfg")
            && punct(j + 3, '(')
            && ident(j + 4, "test")
            && punct(j + 5, ')')
            && punct(j + 6, ']');
        return is_cfg_test.then_some(tokens.len());
    }
    let is_cfg_test = punct(j, '[')
        && ident(j + 1, "cfg")
        && punct(j + 2, '(')
        && ident(j + 3, "test")
        && punct(j + 4, ')')
        && punct(j + 5, ']');
    if !is_cfg_test {
        return None;
    }
    j += 6;
    // Other attributes, then a visibility.
    while punct(j, '#') && punct(j + 1, '[') {
        j = matching(tokens, j + 1, '[', ']')?;
    }
    if ident(j, "pub") {
        j += 1;
        if punct(j, '(') {
            j = matching(tokens, j, '(', ')')?;
        }
    }
    if !ident(j, "mod") {
        return None;
    }
    let Some(Token::Ident(name)) = tokens.get(j + 1) else {
        return None;
    };
    if punct(j + 2, ';') {
        test_modules.push(name.clone());
        return Some(j + 3);
    }
    if punct(j + 2, '{') {
        return Some(matching(tokens, j + 2, '{', '}').unwrap_or(tokens.len()));
    }
    None
}

/// The index after the bracket that closes the one at `open`.
fn matching(tokens: &[Token], open: usize, left: char, right: char) -> Option<usize> {
    let mut depth = 0usize;
    for (j, token) in tokens.iter().enumerate().skip(open) {
        if *token == Token::Punct(left) {
            depth += 1;
        } else if *token == Token::Punct(right) {
            depth -= 1;
            if depth == 0 {
                return Some(j + 1);
            }
        }
    }
    None
}

/// The first segments of the paths that continue at `at`: `n` in
/// `crate::n::x`, `a` and `b` in `crate::{a::{x, y}, b}`.
fn path_heads(tokens: &[Token], at: usize) -> Vec<String> {
    match tokens.get(at) {
        Some(Token::Ident(name)) if !matches!(name.as_str(), "self" | "super" | "crate") => vec![name.clone()],
        Some(Token::Punct('{')) => group_heads(tokens, at),
        _ => Vec::new(),
    }
}

/// The first segment of each item of the use group opening at `open`.
fn group_heads(tokens: &[Token], open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (j, token) in tokens.iter().enumerate().skip(open + 1) {
        match token {
            Token::Punct(',') if depth == 0 => {
                item_start = true;
                continue;
            }
            Token::Punct('{') => {
                if item_start && depth == 0 {
                    heads.extend(group_heads(tokens, j));
                }
                depth += 1;
            }
            Token::Punct('}') if depth == 0 => break,
            Token::Punct('}') => depth -= 1,
            Token::Ident(name) if item_start && depth == 0 && name != "self" => heads.push(name.clone()),
            _ => {}
        }
        item_start = false;
    }
    heads
}

fn is_ident(tokens: &[Token], at: usize, word: &str) -> bool {
    matches!(tokens.get(at), Some(Token::Ident(w)) if w == word)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Rust source as identifiers and punctuation, without comments,
/// string and character literals or numbers.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let hashes = chars[i..].iter().take_while(|&&h| h == '#').count();
            match word.as_str() {
                "r" | "br" | "cr" if at(i + hashes) == '"' => i = skip_raw_string(&chars, i),
                "b" | "c" if at(i) == '"' => i = skip_string(&chars, i),
                "b" if at(i) == '\'' => i = skip_char_or_lifetime(&chars, i),
                "r" if hashes == 1 && (at(i + 1).is_alphabetic() || at(i + 1) == '_') => {
                    i += 1; // r#ident: the identifier follows
                }
                _ => tokens.push(Token::Ident(word)),
            }
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// From the opening `"` to after the closing one.
fn skip_string(chars: &[char], open: usize) -> usize {
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// From the first `#` or `"` of `r#"..."#` to after its end.
fn skip_raw_string(chars: &[char], start: usize) -> usize {
    let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
    let mut i = start + hashes + 1;
    while i < chars.len() {
        if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|&&h| h == '#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// From a `'`: past a character literal, or past the `'` of a lifetime.
fn skip_char_or_lifetime(chars: &[char], open: usize) -> usize {
    match chars.get(open + 1) {
        Some('\\') => {
            let mut i = open + 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i + 1
        }
        _ if chars.get(open + 2) == Some(&'\'') => open + 3,
        _ => open + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(text: &str, depth: usize) -> Vec<String> {
        scan(text, depth).uses.into_iter().collect()
    }

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph.entry(from.to_string()).or_default().insert(to.to_string());
        }
        graph
    }

    #[test]
    fn finds_plain_grouped_and_nested_uses() {
        let text = "
            use crate::state::AppState;
            use crate::{api, k8s_proxy::{self, Forward}};
            use crate::{agents::{registry::{A, B}, routing}, tls as certificates, self};
            use {crate::git, std::fmt};
            fn f() { crate::charts::serve(); let _ = crate::VERSION; }
        ";
        assert_eq!(
            uses(text, 1),
            ["VERSION", "agents", "api", "charts", "git", "k8s_proxy", "state", "tls"]
        );
    }

    #[test]
    fn ignores_comments_strings_and_lookalikes() {
        let text = r####"
            // use crate::line;
            /// crate::doc
            //! crate::inner_doc
            /* crate::block /* crate::nested */ crate::still_block */
            /** crate::block_doc */
            const A: &str = "crate::string \" crate::escaped";
            const B: &str = r#"crate::raw " crate::raw_quote"#;
            const C: &[u8] = b"crate::bytes";
            const D: char = '"';
            const E: char = '\'';
            fn f<'a>(x: &'a str) -> &'a str { x }
            pub(crate) fn g() { glagent_crate::x(); my::crate_like::y(); }
            use crate::real;
        "####;
        assert_eq!(uses(text, 1), ["real"]);
    }

    #[test]
    fn super_counts_only_where_it_reaches_the_crate_root() {
        assert_eq!(
            uses("use super::state; fn f() { super::tls::load(); }", 1),
            ["state", "tls"]
        );
        assert_eq!(uses("use super::{api, git::Repo};", 1), ["api", "git"]);
        // In src/agents/routing.rs super is agents; two are the crate root.
        assert_eq!(uses("use super::registry::Registry;", 2), Vec::<String>::new());
        assert_eq!(uses("use super::super::state::AppState;", 2), ["state"]);
        // Inside an inline module super is the file's own module.
        assert_eq!(uses("mod inner { use super::helper; } use super::state;", 1), ["state"]);
        assert_eq!(uses("mod inner { use super::super::state; }", 1), ["state"]);
        assert_eq!(uses("pub(super) fn f() {}", 1), Vec::<String>::new());
    }

    #[test]
    fn skips_test_modules() {
        let text = "
            use crate::before;
            #[cfg(test)]
            mod tests {
                use crate::in_tests;
                fn f() { let _ = '}'; }
            }
            #[cfg(test)]
            #[path = \"other_tests.rs\"]
            pub(crate) mod more_tests;
            #[cfg(test)]
            fn helper() { crate::test_helper(); }
            use crate::after;
        ";
        let found = scan(text, 1);
        assert_eq!(
            found.uses.into_iter().collect::<Vec<_>>(),
            ["after", "before", "test_helper"]
        );
        assert_eq!(found.test_modules, ["more_tests"]);
        assert!(scan("#![cfg(test)]\nuse crate::a;", 1).uses.is_empty());
    }

    #[test]
    fn lists_the_modules_a_crate_root_declares() {
        let text = "
            //! The crate.
            mod a;
            pub mod b;
            pub(crate) mod c;
            pub(in crate::x) mod d;
            #[cfg(unix)]
            mod e { fn f() {} }
            fn g() { mod not_top {} }
            #[cfg(test)]
            mod tests;
        ";
        assert_eq!(scan(text, 0).modules, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn builds_the_graph_from_both_module_layouts() -> Result<()> {
        let src = std::env::temp_dir()
            .join(format!("xtask-tidy-{}", std::process::id()))
            .join("src");
        let files = [
            (
                "lib.rs",
                "//! A crate.\nmod a;\nmod b;\nmod c;\nmod d;\npub use a::X;\n",
            ),
            ("a.rs", "mod inner;\n#[cfg(test)]\nmod tests;\npub struct X;\n"),
            ("a/inner.rs", "use crate::b::Y;\n"),
            ("a/tests.rs", "use crate::d::Z;\n"),
            ("b/mod.rs", "mod deep;\npub struct Y;\nuse super::c;\n"),
            ("b/deep.rs", "use super::super::a::X;\nuse crate::b::Y;\n"),
            ("c.rs", "// crate::a\n"),
        ];
        for (path, text) in files {
            let path = src.join(path);
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(path, text)?;
        }
        let graph = module_graph(&src);
        std::fs::remove_dir_all(src.parent().unwrap())?;
        assert_eq!(
            graph?,
            graph_of(&[("a", &["b"]), ("b", &["a", "c"]), ("c", &[]), ("d", &[])])
        );
        Ok(())
    }

    fn graph_of(nodes: &[(&str, &[&str])]) -> Graph {
        nodes
            .iter()
            .map(|(n, to)| (n.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn finds_and_prints_a_cycle() {
        let g = graph(&[
            ("state", "k8s_proxy"),
            ("k8s_proxy", "agents"),
            ("agents", "state"),
            ("api", "state"),
        ]);
        let found = cycles(&g);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "module cycle agents -> state -> k8s_proxy -> agents"
        );
    }

    #[test]
    fn prints_one_cycle_per_component_and_names_the_rest_of_it() {
        let g = graph(&[
            ("a", "b"),
            ("b", "a"),
            ("a", "c"),
            ("c", "a"),
            ("x", "y"),
            ("y", "x"),
            ("b", "x"),
        ]);
        let shown: Vec<String> = cycles(&g).iter().map(Cycle::to_string).collect();
        assert_eq!(
            shown,
            [
                "module cycle a -> b -> a (also entangled: c)",
                "module cycle x -> y -> x"
            ]
        );
    }

    #[test]
    fn a_dag_passes() {
        let g = graph(&[
            ("cli", "client"),
            ("cli", "kubeconfig"),
            ("kubeconfig", "client"),
            ("cli", "render"),
        ]);
        assert!(cycles(&g).is_empty());
        assert!(cycles(&Graph::new()).is_empty());
    }

    #[test]
    fn long_test_files_are_reported() {
        let ok = "x\n".repeat(MAX_TEST_FILE_LINES);
        assert_eq!(test_file_too_long("crates/a/tests/it/ok.rs", &ok), None);
        let long = "x\n".repeat(MAX_TEST_FILE_LINES + 1);
        assert_eq!(
            test_file_too_long("crates/a/tests/it/long.rs", &long).as_deref(),
            Some("crates/a/tests/it/long.rs: 801 lines (at most 800): split it by behaviour")
        );
        let root = Path::new("/w");
        assert!(is_integration_test(root, Path::new("/w/crates/a/tests/it/deep/x.rs")));
        assert!(!is_integration_test(root, Path::new("/w/crates/a/src/tests/x.rs")));
    }
}
