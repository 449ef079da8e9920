//! OpenDSS scripts, read as OpenDSS reads them: commands one per line (`New`, `Edit`, `~` to go
//! on with the last object, `Set`, `Redirect`/`Compile`, `BatchEdit`, `Clear`, `Calcvoltagebases`,
//! `BusCoords`, `Solve`), properties as `name=value` or by position, values quoted by `"` `'`
//! `(` `[` `{`, comments after `!` or `//` and between `/*` and `*/`, names case-insensitive,
//! paths relative to the file that names them. The result is the circuit's objects in the order
//! they were defined, each with every property as written and where it was written, ready for
//! the network model to take apart.
//!
//! Nothing is dropped silently: a command, a class or a property form this reader does not know
//! is an error that names the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most nested `Redirect`s (a file that redirects to itself stops here).
pub const MAX_REDIRECT_DEPTH: usize = 16;
/// Most objects in one circuit.
pub const MAX_OBJECTS: usize = 1_000_000;

/// The classes this reader takes. `energymeter` and `monitor` are kept (they name what is
/// measured; the power flow needs nothing of them).
pub const CLASSES: [&str; 15] = [
    "circuit",
    "vsource",
    "linecode",
    "line",
    "transformer",
    "regcontrol",
    "capacitor",
    "capcontrol",
    "load",
    "generator",
    "pvsystem",
    "storage",
    "loadshape",
    "energymeter",
    "monitor",
];

/// Where something was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DssError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
        /// The `Redirect` that named it, if any.
        from: Option<At>,
    },
    #[error("{at}: {reason}")]
    Syntax { at: At, reason: String },
    #[error("{at}: `{command}` is not a command this reader takes (it takes New, Edit, ~, Set, Redirect, Compile, BatchEdit, Clear, Calcvoltagebases, BusCoords, Solve)")]
    UnsupportedCommand { at: At, command: String },
    #[error("{at}: `{class}` is not a class this reader takes (it takes {})", CLASSES.join(", "))]
    UnsupportedClass { at: At, class: String },
    #[error("{at}: `{name}` is not defined before it is edited")]
    Undefined { at: At, name: String },
    #[error("{at}: more than {MAX_REDIRECT_DEPTH} nested Redirects")]
    TooDeep { at: At },
    #[error("{at}: more than {MAX_OBJECTS} objects")]
    TooMany { at: At },
}

/// One property as written: its name (lowercase; `None` where given by position) and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    pub name: Option<String>,
    pub value: String,
    pub at: At,
}

/// One object of the circuit: its class and name (lowercase) and its properties in the order
/// written (a later one overrides an earlier one of the same name, as in OpenDSS).
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub class: String,
    pub name: String,
    pub properties: Vec<Property>,
    pub at: At,
}

impl Object {
    /// The last value given to `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Property> {
        let name = name.to_ascii_lowercase();
        self.properties
            .iter()
            .rev()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
    }
}

/// A circuit as its scripts define it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    pub objects: Vec<Object>,
    /// `Set` options (lowercase names), the last value of each, and where.
    pub options: BTreeMap<String, Property>,
    /// `BusCoords` files, resolved.
    pub bus_coords: Vec<PathBuf>,
    /// Whether the script asked for `Calcvoltagebases` and for a `Solve`.
    pub calc_voltage_bases: bool,
    pub solve: bool,
}

impl Script {
    /// The objects of `class` (lowercase).
    pub fn of_class<'a>(&'a self, class: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.class == class)
    }

    /// The object `class.name` (case-insensitive).
    pub fn object(&self, class: &str, name: &str) -> Option<&Object> {
        let (class, name) = (class.to_ascii_lowercase(), name.to_ascii_lowercase());
        self.objects
            .iter()
            .find(|o| o.class == class && o.name == name)
    }
}

/// Reads the script at `path` and every file it redirects to.
pub fn read(path: &Path) -> Result<Script, DssError> {
    let mut r = Reader {
        script: Script::default(),
        last: None,
        index: Default::default(),
    };
    r.file(path, None, 0)?;
    Ok(r.script)
}

/// Reads a script from text, paths relative to `dir`.
pub fn parse(text: &str, file: &Path) -> Result<Script, DssError> {
    let mut r = Reader {
        script: Script::default(),
        last: None,
        index: Default::default(),
    };
    r.text(text, file, 0)?;
    Ok(r.script)
}

struct Reader {
    script: Script,
    /// The object `~` goes on with.
    last: Option<usize>,
    /// Where each object (class, name) is in `script.objects`.
    index: std::collections::HashMap<(String, String), usize>,
}

impl Reader {
    fn file(&mut self, path: &Path, from: Option<At>, depth: usize) -> Result<(), DssError> {
        let bytes = std::fs::read(path).map_err(|error| DssError::Read {
            path: path.to_path_buf(),
            error,
            from: from.clone(),
        })?;
        // OpenDSS files are often Latin-1: read bytes as such where they are not UTF-8.
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => e.into_bytes().iter().map(|b| *b as char).collect(),
        };
        self.text(&text, path, depth)
    }

    fn text(&mut self, text: &str, file: &Path, depth: usize) -> Result<(), DssError> {
        let mut in_block = false;
        for (i, raw) in text.lines().enumerate() {
            let at = At {
                file: file.to_path_buf(),
                line: i + 1,
            };
            let line = strip_comments(raw, &mut in_block);
            let tokens = tokens(&line).map_err(|reason| DssError::Syntax {
                at: at.clone(),
                reason,
            })?;
            let Some((first, rest)) = tokens.split_first() else {
                continue;
            };
            if first.name.is_some() {
                return Err(DssError::Syntax {
                    at,
                    reason: format!("a line starts with a command, not `{}=`", first.value),
                });
            }
            self.command(&first.value, rest, at, depth)?;
        }
        Ok(())
    }

    fn command(
        &mut self,
        command: &str,
        args: &[Token],
        at: At,
        depth: usize,
    ) -> Result<(), DssError> {
        let props = |args: &[Token]| -> Vec<Property> {
            args.iter()
                .map(|t| Property {
                    name: t.name.clone(),
                    value: t.value.clone(),
                    at: at.clone(),
                })
                .collect()
        };
        match command.to_ascii_lowercase().as_str() {
            "new" | "edit" => {
                let edit = command.eq_ignore_ascii_case("edit");
                let (target, rest) = args.split_first().ok_or_else(|| DssError::Syntax {
                    at: at.clone(),
                    reason: format!("`{command}` needs an object, e.g. `Line.L1`"),
                })?;
                // `New object=Line.L1` or `New Line.L1`.
                if target.name.as_deref().is_some_and(|n| n != "object") {
                    return Err(DssError::Syntax {
                        at,
                        reason: format!(
                            "`{command}` needs an object first, not `{}=`",
                            target.name.as_deref().unwrap_or("")
                        ),
                    });
                }
                let (class, name) = split_object(&target.value, &at)?;
                if !CLASSES.contains(&class.as_str()) {
                    return Err(DssError::UnsupportedClass { at, class });
                }
                let existing = self.index.get(&(class.clone(), name.clone())).copied();
                // A circuit comes with its source, `Vsource.Source`.
                let index = match (edit, existing) {
                    (_, Some(i)) if edit || class == "vsource" => i,
                    (true, None) => {
                        return Err(DssError::Undefined {
                            at,
                            name: format!("{class}.{name}"),
                        })
                    }
                    _ => {
                        if self.script.objects.len() >= MAX_OBJECTS {
                            return Err(DssError::TooMany { at });
                        }
                        let i = self.script.objects.len();
                        self.index.insert((class.clone(), name.clone()), i);
                        self.script.objects.push(Object {
                            class: class.clone(),
                            name,
                            properties: Vec::new(),
                            at: at.clone(),
                        });
                        if class == "circuit" {
                            self.index
                                .insert(("vsource".into(), "source".into()), i + 1);
                            self.script.objects.push(Object {
                                class: "vsource".into(),
                                name: "source".into(),
                                properties: Vec::new(),
                                at: at.clone(),
                            });
                        }
                        i
                    }
                };
                let mut p = props(rest);
                // A circuit's properties are its source's.
                let target = if class == "circuit" { index + 1 } else { index };
                self.script.objects[target].properties.append(&mut p);
                self.last = Some(target);
                Ok(())
            }
            "~" | "more" | "m" => {
                let i = self.last.ok_or_else(|| DssError::Syntax {
                    at: at.clone(),
                    reason: "`~` goes on with the last object, and there is none".into(),
                })?;
                let mut p = props(args);
                self.script.objects[i].properties.append(&mut p);
                Ok(())
            }
            "set" => {
                for t in args {
                    let name = t.name.clone().ok_or_else(|| DssError::Syntax {
                        at: at.clone(),
                        reason: format!("`Set` takes name=value, not `{}`", t.value),
                    })?;
                    self.script.options.insert(
                        name.clone(),
                        Property {
                            name: Some(name),
                            value: t.value.clone(),
                            at: at.clone(),
                        },
                    );
                }
                Ok(())
            }
            "redirect" | "compile" => {
                let file = args.first().ok_or_else(|| DssError::Syntax {
                    at: at.clone(),
                    reason: format!("`{command}` needs a file"),
                })?;
                if depth >= MAX_REDIRECT_DEPTH {
                    return Err(DssError::TooDeep { at });
                }
                let path = relative_to(&at.file, &file.value);
                self.file(&path, Some(at), depth + 1)
            }
            "batchedit" => {
                let (target, rest) = args.split_first().ok_or_else(|| DssError::Syntax {
                    at: at.clone(),
                    reason: "`BatchEdit` needs `class.pattern`".into(),
                })?;
                let (class, pattern) =
                    target
                        .value
                        .split_once('.')
                        .ok_or_else(|| DssError::Syntax {
                            at: at.clone(),
                            reason: format!(
                                "`BatchEdit` needs `class.pattern`, not `{}`",
                                target.value
                            ),
                        })?;
                let class = class.to_ascii_lowercase();
                if !CLASSES.contains(&class.as_str()) {
                    return Err(DssError::UnsupportedClass { at, class });
                }
                // The patterns the feeders use: everything (`.*`), or a name prefix.
                let pattern = pattern.to_ascii_lowercase();
                let prefix = match pattern.strip_suffix(".*") {
                    Some(p) if !p.contains(['.', '*', '[', '(', '?', '+']) => p.to_string(),
                    _ => {
                        return Err(DssError::Syntax {
                            at,
                            reason: format!(
                                "`BatchEdit` takes `.*` or `prefix.*`, not the pattern `{pattern}`"
                            ),
                        })
                    }
                };
                let p = props(rest);
                for o in self
                    .script
                    .objects
                    .iter_mut()
                    .filter(|o| o.class == class && o.name.starts_with(&prefix))
                {
                    o.properties.extend(p.iter().cloned());
                }
                Ok(())
            }
            "clear" => {
                self.script = Script::default();
                self.last = None;
                self.index.clear();
                Ok(())
            }
            "calcvoltagebases" | "calcv" => {
                self.script.calc_voltage_bases = true;
                Ok(())
            }
            "buscoords" => {
                let file = args.first().ok_or_else(|| DssError::Syntax {
                    at: at.clone(),
                    reason: "`BusCoords` needs a file".into(),
                })?;
                self.script
                    .bus_coords
                    .push(relative_to(&at.file, &file.value));
                Ok(())
            }
            "solve" => {
                self.script.solve = true;
                Ok(())
            }
            _ => Err(DssError::UnsupportedCommand {
                at,
                command: command.to_string(),
            }),
        }
    }
}

fn relative_to(file: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// `Class.name` as lowercase class and name (the name may hold dots).
fn split_object(s: &str, at: &At) -> Result<(String, String), DssError> {
    let (class, name) = s.split_once('.').ok_or_else(|| DssError::Syntax {
        at: at.clone(),
        reason: format!("`{s}` is not `Class.name`"),
    })?;
    if class.is_empty() || name.is_empty() {
        return Err(DssError::Syntax {
            at: at.clone(),
            reason: format!("`{s}` is not `Class.name`"),
        });
    }
    Ok((class.to_ascii_lowercase(), name.to_ascii_lowercase()))
}

/// The line without its comments (`!`, `//`, `/* */` across lines), quotes respected.
fn strip_comments(line: &str, in_block: &mut bool) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if *in_block {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                *in_block = false;
            }
            continue;
        }
        match (quote, c) {
            (Some(q), _) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), _) => out.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '!') => break,
            (None, '/') if chars.peek() == Some(&'/') => break,
            (None, '/') if chars.peek() == Some(&'*') => {
                chars.next();
                *in_block = true;
            }
            (None, _) => out.push(c),
        }
    }
    out
}

/// One token of a line: a value, named or not.
#[derive(Clone, Debug, PartialEq)]
struct Token {
    name: Option<String>,
    value: String,
}

/// A line's tokens: separated by spaces, tabs or commas; `name=value` (spaces around `=`
/// allowed); a value in `"…"`, `'…'`, `(…)`, `[…]` or `{…}` is one token, its quotes removed.
fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip = |i: &mut usize| {
        while *i < chars.len() && (chars[*i].is_whitespace() || chars[*i] == ',') {
            *i += 1;
        }
    };
    let word = |i: &mut usize| -> Result<String, String> {
        let close = match chars.get(*i) {
            Some('"') => Some('"'),
            Some('\'') => Some('\''),
            Some('(') => Some(')'),
            Some('[') => Some(']'),
            Some('{') => Some('}'),
            _ => None,
        };
        if let Some(close) = close {
            let open = chars[*i];
            let start = *i + 1;
            let mut depth = 1;
            *i += 1;
            while *i < chars.len() {
                if chars[*i] == close && (close != open || depth == 1) {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                } else if chars[*i] == open && open != close {
                    depth += 1;
                }
                *i += 1;
            }
            if *i >= chars.len() {
                return Err(format!("`{open}` is not closed by `{close}`"));
            }
            let s: String = chars[start..*i].iter().collect();
            *i += 1;
            return Ok(s.trim().to_string());
        }
        let start = *i;
        while *i < chars.len() && !chars[*i].is_whitespace() && chars[*i] != ',' && chars[*i] != '='
        {
            *i += 1;
        }
        Ok(chars[start..*i].iter().collect())
    };
    loop {
        skip(&mut i);
        if i >= chars.len() {
            break;
        }
        if chars[i] == '=' {
            return Err("`=` without a property name before it".into());
        }
        let first = word(&mut i)?;
        // `name = value`?
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        if j < chars.len() && chars[j] == '=' {
            i = j + 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            let value = if i < chars.len() && chars[i] != ',' {
                word(&mut i)?
            } else {
                String::new()
            };
            out.push(Token {
                name: Some(first.to_ascii_lowercase()),
                value,
            });
        } else {
            out.push(Token {
                name: None,
                value: first,
            });
        }
    }
    Ok(out)
}

/// A number as OpenDSS writes one: plain, or an expression in reverse Polish notation
/// (`8 1000 /`, with `+ - * /`) as the parentheses around it leave it.
pub fn number(value: &str) -> Result<f64, String> {
    let v = value.trim();
    if let Ok(x) = v.parse::<f64>() {
        return Ok(x);
    }
    let mut stack: Vec<f64> = Vec::new();
    for t in v
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        match t {
            "+" | "-" | "*" | "/" => {
                let (b, a) = (stack.pop(), stack.pop());
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(format!(
                        "`{value}` is not a number (RPN `{t}` needs two operands)"
                    ));
                };
                stack.push(match t {
                    "+" => a + b,
                    "-" => a - b,
                    "*" => a * b,
                    _ => a / b,
                });
            }
            _ => stack.push(
                t.parse()
                    .map_err(|_| format!("`{value}` is not a number"))?,
            ),
        }
    }
    match stack.as_slice() {
        [x] if x.is_finite() => Ok(*x),
        _ => Err(format!("`{value}` is not a number")),
    }
}

/// The items of an array value (`[11 .416]`, `(a b c)` already without its brackets).
pub fn array(value: &str) -> Vec<String> {
    value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// A symmetric matrix as OpenDSS writes one, its lower triangle row by row separated by `|`
/// (`0.3465 | 0.1560 0.3375`), or whole: the full `n × n` matrix.
pub fn matrix(value: &str) -> Result<Vec<Vec<f64>>, String> {
    let rows: Vec<Vec<f64>> = value
        .split('|')
        .map(|r| {
            array(r)
                .iter()
                .map(|x| number(x))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let n = rows.len();
    let mut m = vec![vec![0.0; n]; n];
    for (i, r) in rows.iter().enumerate() {
        match r.len() {
            l if l == i + 1 => {
                for (j, x) in r.iter().enumerate() {
                    m[i][j] = *x;
                    m[j][i] = *x;
                }
            }
            l if l == n => m[i].clone_from(r),
            l => {
                return Err(format!(
                    "row {} of the matrix `{value}` has {l} values, not {} or {n}",
                    i + 1,
                    i + 1
                ))
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> PathBuf {
        PathBuf::from("/x/master.dss")
    }

    #[test]
    fn lines_become_objects_with_their_properties_as_written() {
        let s = parse(
            "clear\nSet DefaultBaseFrequency=50 ! Europe\nNew circuit.LVTest\nEdit Vsource.Source BasekV=11 pu=1.05\nNew Transformer.Sub Phases=3 Windings=2   XHL=(8 1000 /)\n~ wdg=1 bus=SourceBus   conn=delta  kv=115\n// a comment\nNew linecode.mtx601 nphases=3\n~ rmatrix = (0.3465 | 0.1560 0.3375 | 0.1580 0.1535 0.3414 )\nNew energymeter.m1 LINE.LINE1 1\n/* a\nblock */ calcv\nSet voltagebases=[11  .416]\nsolve\n",
            &here(),
        )
        .unwrap();
        assert_eq!(s.options["defaultbasefrequency"].value, "50");
        assert_eq!(s.options["voltagebases"].value, "11  .416");
        let source = s.object("VSOURCE", "source").unwrap();
        assert_eq!(source.get("basekv").unwrap().value, "11");
        let sub = s.object("transformer", "sub").unwrap();
        assert_eq!(number(&sub.get("xhl").unwrap().value).unwrap(), 0.008);
        assert_eq!(sub.get("conn").unwrap().value, "delta");
        assert_eq!(sub.get("kv").unwrap().at.line, 6);
        let m = matrix(
            &s.object("linecode", "mtx601")
                .unwrap()
                .get("rmatrix")
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(m[0][1], 0.1560);
        assert_eq!(m[1][0], 0.1560);
        assert_eq!(m[2][2], 0.3414);
        let meter = s.object("energymeter", "m1").unwrap();
        assert_eq!(meter.properties[0].name, None);
        assert_eq!(meter.properties[0].value, "LINE.LINE1");
        assert!(s.calc_voltage_bases && s.solve);
        assert_eq!(array("11  .416"), vec!["11", ".416"]);
    }

    #[test]
    fn what_it_does_not_take_is_an_error_naming_file_and_line() {
        for (text, line, what) in [
            (
                "New circuit.x\nplot circuit\n",
                2,
                "`plot` is not a command",
            ),
            ("New Fuse.f1 bus1=a\n", 1, "`fuse` is not a class"),
            ("~ bus=a\n", 1, "there is none"),
            ("Edit Line.nowhere r1=1\n", 1, "line.nowhere"),
            ("New Line.l1 r1=(1 2\n", 1, "not closed"),
            ("BatchEdit load..l[0-9] kw=1\n", 1, "the pattern"),
            ("Set 50\n", 1, "name=value"),
        ] {
            let e = parse(text, &here()).unwrap_err().to_string();
            assert!(e.contains(&format!("/x/master.dss:{line}")), "{e}");
            assert!(e.contains(what), "{what}: {e}");
        }
        let e = read(Path::new("/nonexistent/master.dss"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/master.dss"), "{e}");
        assert!(number("(1 +)").is_err() && number("abc").is_err());
        assert!(matrix("1 | 2").is_err());
    }

    #[test]
    fn the_reference_feeders_read_whole() {
        let count = |s: &Script, class: &str| s.of_class(class).count();
        let ieee13 = read(&gridmesh_refdata::require("dss/ieee13/IEEE13Nodeckt.dss")).unwrap();
        for (class, n) in [
            ("circuit", 1),
            ("vsource", 1),
            ("transformer", 5),
            ("regcontrol", 3),
            ("linecode", 36),
            ("load", 15),
            ("capacitor", 2),
            ("line", 12),
        ] {
            assert_eq!(count(&ieee13, class), n, "IEEE 13: {class}");
        }
        assert_eq!(
            ieee13
                .object("vsource", "source")
                .unwrap()
                .get("basekv")
                .unwrap()
                .value,
            "115"
        );
        assert!(ieee13.calc_voltage_bases);
        let lv = read(&gridmesh_refdata::require("dss/ieee-eu-lv/Master.dss")).unwrap();
        for (class, n) in [
            ("linecode", 10),
            ("loadshape", 55),
            ("line", 905),
            ("transformer", 1),
            ("load", 55),
        ] {
            assert_eq!(count(&lv, class), n, "European LV: {class}");
        }
        // BatchEdit reached every load shape; the source was edited after the circuit.
        let shape = lv.object("loadshape", "shape_1").unwrap();
        assert_eq!(shape.get("useactual").unwrap().value, "no");
        assert_eq!(
            lv.object("vsource", "source")
                .unwrap()
                .get("pu")
                .unwrap()
                .value,
            "1.05"
        );
        assert_eq!(lv.bus_coords.len(), 1);
        assert!(lv.bus_coords[0].ends_with("Buscoords.txt"));
    }
}
