//! Load and weather for a scenario: the built-in reference year, or the user's files.
//!
//! - `weather = "builtin"`: the DWD test reference year 2010 for Potsdam (region 4), shipped in
//!   the binary (`gridmesh_agent::data::REFERENCE_TRY`, DWD open data via demandlib, MIT). A path ending in
//!   `.dat` is read as a DWD TRY file; a `.csv` needs a header with `beam_horizontal_w_m2`,
//!   `diffuse_horizontal_w_m2` and `temperature_c` and 8,760 hourly rows (UTC, from 1 January).
//! - `load = "builtin"`: the BDEW H25 household profile (`gridmesh_agent::data::REFERENCE_H25`, via demandlib, MIT). A
//!   path whose first line holds `kw` as a column name is read as one load shape of 35,040
//!   quarter-hour values (kW, UTC); any other file as a BDEW profile in the H25 layout.
//!
//! Either way every home's load is the shape scaled to its annual consumption, times its own
//! seeded variation (`gridmesh_agent::data::with_variation`).

use gridmesh_agent::data::{self as refdata, BdewProfile, WeatherHour, SLOTS_2010};

use crate::scenario::ScenarioError;

const BUILTIN_TRY: &str = gridmesh_agent::data::REFERENCE_TRY;
const BUILTIN_H25: &str = gridmesh_agent::data::REFERENCE_H25;

/// The shape every home's load is drawn from.
pub enum LoadShape {
    Bdew(BdewProfile),
    /// kW per quarter hour, normalised to 1 kWh a year.
    Series(Vec<f64>),
}

impl LoadShape {
    /// A home's load over the year, kW per quarter hour.
    pub fn home(&self, annual_kwh: f64, seed: u64) -> Vec<f64> {
        match self {
            LoadShape::Bdew(p) => refdata::household_load_kw(p, annual_kwh, seed),
            LoadShape::Series(s) => {
                let base: Vec<f64> = s.iter().map(|v| v * annual_kwh).collect();
                refdata::with_variation(&base, seed)
            }
        }
    }
}

/// The weather and load shape of a scenario.
pub struct Inputs {
    pub weather: Vec<WeatherHour>,
    pub load: LoadShape,
    /// The homes file's rows (empty: every home drawn).
    pub homes: Vec<HomeRow>,
}

/// Everything a scenario reads from files: weather, load and the homes file (paths relative to
/// `base`, the scenario's directory).
pub fn load_scenario(s: &crate::Scenario, base: &std::path::Path) -> Result<Inputs, ScenarioError> {
    let mut inputs = load(&s.data.weather, &s.data.load, base)?;
    if !s.homes.file.is_empty() {
        let rows = homes_file(&s.homes.file, base)?;
        if rows.len() != s.homes.count {
            return Err(ScenarioError::Invalid(format!(
                "homes.count is {} but {} describes {} homes: set homes.count = {}",
                s.homes.count,
                s.homes.file,
                rows.len(),
                rows.len()
            )));
        }
        inputs.homes = rows;
    }
    Ok(inputs)
}

/// The file at `path`, named by the scenario's `key`.
fn read(key: &str, path: &str) -> Result<String, ScenarioError> {
    std::fs::read_to_string(path).map_err(|e| ScenarioError::Data {
        path: path.to_string(),
        message: format!("cannot read the file {key} names: {e}"),
    })
}

fn data_err(path: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Data {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Reads the weather and load named by a scenario (paths relative to `base`, the scenario's
/// directory).
pub fn load(weather: &str, load: &str, base: &std::path::Path) -> Result<Inputs, ScenarioError> {
    let resolve = |p: &str| base.join(p).to_string_lossy().into_owned();
    let weather = if weather == "builtin" {
        refdata::parse_try(BUILTIN_TRY).expect("the shipped reference year parses")
    } else {
        let path = resolve(weather);
        let text = read("data.weather", &path)?;
        if path.ends_with(".csv") {
            weather_csv(&text).map_err(|m| data_err(&path, m))?
        } else {
            refdata::parse_try(&text).map_err(|e| data_err(&path, e.to_string()))?
        }
    };
    if weather.len() != 8_760 {
        return Err(data_err(
            "weather",
            format!("expected 8760 hourly rows, found {}", weather.len()),
        ));
    }
    let load = if load == "builtin" {
        LoadShape::Bdew(refdata::parse_bdew(BUILTIN_H25).expect("the shipped profile parses"))
    } else {
        let path = resolve(load);
        let text = read("data.load", &path)?;
        let header = text.lines().next().unwrap_or_default();
        if header.split(',').any(|c| c.trim() == "kw") {
            LoadShape::Series(load_csv(&text).map_err(|m| data_err(&path, m))?)
        } else {
            LoadShape::Bdew(refdata::parse_bdew(&text).map_err(|e| data_err(&path, e.to_string()))?)
        }
    };
    Ok(Inputs {
        weather,
        load,
        homes: Vec::new(),
    })
}

fn columns<'a>(header: &'a str, names: &[&str]) -> Result<Vec<usize>, String> {
    let cols: Vec<&'a str> = header.split(',').map(str::trim).collect();
    names
        .iter()
        .map(|n| {
            cols.iter()
                .position(|c| c == n)
                .ok_or_else(|| format!("line 1: no column {n:?} (columns: {})", cols.join(", ")))
        })
        .collect()
}

fn number(line: usize, field: Option<&str>) -> Result<f64, String> {
    let f = field.ok_or_else(|| format!("line {line}: too few columns"))?;
    f.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("line {line}: {f:?} is not a number"))
}

fn weather_csv(text: &str) -> Result<Vec<WeatherHour>, String> {
    let mut lines = text.lines();
    let idx = columns(
        lines.next().unwrap_or_default(),
        &[
            "beam_horizontal_w_m2",
            "diffuse_horizontal_w_m2",
            "temperature_c",
        ],
    )?;
    let mut out = Vec::with_capacity(8_760);
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let v = |k: usize| number(i + 2, f.get(idx[k]).copied());
        let (beam, diffuse, t) = (v(0)?, v(1)?, v(2)?);
        if !(0.0..=1_400.0).contains(&beam) || !(0.0..=1_400.0).contains(&diffuse) {
            return Err(format!(
                "line {}: irradiance must be 0 to 1400 W/m², not {beam} / {diffuse}",
                i + 2
            ));
        }
        if !(-60.0..=60.0).contains(&t) {
            return Err(format!(
                "line {}: temperature {t} °C is not plausible",
                i + 2
            ));
        }
        out.push(WeatherHour {
            cloud_octas: 0,
            temperature_c: t,
            beam_horizontal_w_m2: beam,
            diffuse_horizontal_w_m2: diffuse,
        });
    }
    if out.len() != 8_760 {
        return Err(format!("expected 8760 hourly rows, found {}", out.len()));
    }
    Ok(out)
}

fn load_csv(text: &str) -> Result<Vec<f64>, String> {
    let mut lines = text.lines();
    let idx = columns(lines.next().unwrap_or_default(), &["kw"])?[0];
    let mut out = Vec::with_capacity(SLOTS_2010);
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v = number(i + 2, line.split(',').nth(idx))?;
        if v < 0.0 {
            return Err(format!(
                "line {}: load must not be negative, not {v}",
                i + 2
            ));
        }
        out.push(v);
    }
    if out.len() != SLOTS_2010 {
        return Err(format!(
            "expected {SLOTS_2010} quarter-hour rows, found {}",
            out.len()
        ));
    }
    let annual_kwh: f64 = out.iter().sum::<f64>() / 4.0;
    if annual_kwh <= 0.0 {
        return Err("the load is zero all year".into());
    }
    Ok(out.into_iter().map(|v| v / annual_kwh).collect())
}

/// One row of a homes file: what the planner knows of a home; `None` is drawn from the
/// scenario's shares and ranges as usual.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HomeRow {
    /// MATPOWER bus number the home sits on.
    pub bus: Option<u32>,
    pub annual_kwh: Option<f64>,
    /// 0: no PV.
    pub pv_kwp: Option<f64>,
    /// 0: no battery.
    pub battery_kwh: Option<f64>,
    pub ev: Option<bool>,
    pub heat_pump: Option<bool>,
}

/// The columns a homes file may have (any subset, any order).
pub const HOME_COLUMNS: [&str; 6] = [
    "bus",
    "annual_kwh",
    "pv_kwp",
    "battery_kwh",
    "ev",
    "heat_pump",
];

/// Reads the homes file `path` named by `homes.file` (relative to `base`): a header of
/// [`HOME_COLUMNS`] and a row per home; an empty cell is drawn.
pub fn homes_file(path: &str, base: &std::path::Path) -> Result<Vec<HomeRow>, ScenarioError> {
    let path = base.join(path).to_string_lossy().into_owned();
    let text = read("homes.file", &path)?;
    homes_csv(&text).map_err(|m| data_err(&path, m))
}

fn homes_csv(text: &str) -> Result<Vec<HomeRow>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let mut col = [None; HOME_COLUMNS.len()];
    for (i, h) in header.iter().enumerate() {
        let k = HOME_COLUMNS.iter().position(|c| c == h).ok_or_else(|| {
            format!(
                "line 1: unknown column {h:?} (known: {})",
                HOME_COLUMNS.join(", ")
            )
        })?;
        if col[k].replace(i).is_some() {
            return Err(format!("line 1: column {h:?} appears twice"));
        }
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line_no = i + 2;
        if rows.len() == crate::scenario::MAX_HOMES {
            return Err(format!("more than {} homes", crate::scenario::MAX_HOMES));
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != header.len() {
            return Err(format!(
                "line {line_no}: {} fields, the header has {}",
                f.len(),
                header.len()
            ));
        }
        let cell = |k: usize| col[k].map(|c| f[c]).filter(|v| !v.is_empty());
        let ranged = |k: usize, lo: f64, hi: f64| -> Result<Option<f64>, String> {
            cell(k)
                .map(|v| {
                    let x = number(line_no, Some(v))?;
                    if (lo..=hi).contains(&x) {
                        Ok(x)
                    } else {
                        Err(format!(
                            "line {line_no}: {} must be {lo} to {hi}, not {x}",
                            HOME_COLUMNS[k]
                        ))
                    }
                })
                .transpose()
        };
        let flag = |k: usize| -> Result<Option<bool>, String> {
            cell(k)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "1" | "yes" | "true" => Ok(true),
                    "0" | "no" | "false" => Ok(false),
                    _ => Err(format!(
                        "line {line_no}: {} is yes or no (1 or 0), not {v:?}",
                        HOME_COLUMNS[k]
                    )),
                })
                .transpose()
        };
        let bus = cell(0)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("line {line_no}: bus {v:?} is not a bus number"))
            })
            .transpose()?;
        rows.push(HomeRow {
            bus,
            annual_kwh: ranged(1, 100.0, 100_000.0)?,
            pv_kwp: ranged(2, 0.0, 1_000.0)?,
            battery_kwh: ranged(3, 0.0, 1_000.0)?,
            ev: flag(4)?,
            heat_pump: flag(5)?,
        });
    }
    if rows.is_empty() {
        return Err("no homes (a header line, then a line per home)".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_data_is_a_year() {
        let i = load("builtin", "builtin", std::path::Path::new(".")).unwrap();
        assert_eq!(i.weather.len(), 8_760);
        let home = i.load.home(3_000.0, 1);
        let kwh: f64 = home.iter().sum::<f64>() / 4.0;
        assert!((kwh / 3_000.0 - 1.0).abs() < 0.1, "{kwh}");
    }

    #[test]
    fn a_homes_file_gives_what_it_knows_and_refuses_nonsense() {
        let rows = homes_csv("pv_kwp, bus,ev\n5.5,3,yes\n,4,\n0,,0\n").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            HomeRow {
                bus: Some(3),
                pv_kwp: Some(5.5),
                ev: Some(true),
                ..Default::default()
            }
        );
        assert_eq!(
            (rows[1].pv_kwp, rows[1].bus, rows[1].ev),
            (None, Some(4), None)
        );
        assert_eq!((rows[2].pv_kwp, rows[2].ev), (Some(0.0), Some(false)));
        for (text, why) in [
            ("pv\n1\n", "unknown column \"pv\""),
            ("ev,ev\n1,1\n", "appears twice"),
            ("pv_kwp\n-1\n", "line 2: pv_kwp must be 0 to 1000, not -1"),
            ("pv_kwp\nlots\n", "line 2: \"lots\" is not a number"),
            ("ev\n1\nmaybe\n", "line 3: ev is yes or no"),
            ("bus,ev\n7\n", "line 2: 1 fields, the header has 2"),
            ("bus\n-2\n", "not a bus number"),
            ("bus\n", "no homes"),
        ] {
            let e = homes_csv(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn user_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("load.csv");
        std::fs::write(&p, "kw\n1\n2\n").unwrap();
        let e = load("builtin", "load.csv", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("load.csv") && e.contains("35040"), "{e}");
        let mut text = String::from("slot,kw\n");
        for s in 0..SLOTS_2010 {
            text += &format!("{s},{}\n", if s % 96 < 48 { 0.5 } else { 1.5 });
        }
        std::fs::write(&p, &text).unwrap();
        let i = load("builtin", "load.csv", dir.path()).unwrap();
        let home = i.load.home(2_000.0, 3);
        assert!((home.iter().sum::<f64>() / 4.0 / 2_000.0 - 1.0).abs() < 0.1);
        std::fs::write(
            dir.path().join("w.csv"),
            "temperature_c,beam_horizontal_w_m2\n",
        )
        .unwrap();
        let e = load("w.csv", "builtin", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("diffuse_horizontal_w_m2"), "{e}");
        let e = load("missing.dat", "builtin", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.dat"), "{e}");
    }
}
