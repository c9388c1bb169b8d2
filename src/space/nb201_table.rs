//! A user-supplied NAS-Bench-201 accuracy table (the engine ships no benchmark data).
//!
//! The CSV layout of NATS-Bench exports: a header with at least the columns
//! `CIFAR10TestAccuracy200Epochs`, `CIFAR100TestAccuracy200Epochs`,
//! `ImageNetTestAccuracy200Epochs` and `ArchitectureString`, then one row per cell; the row
//! order is the benchmark index (row 0 = index 0).

use std::collections::HashMap;
use std::path::Path;

use super::nb201::{Nb201Arch, NUM_ARCHS};
use crate::error::{Error, Result};

/// Benchmark facts about one cell.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Nb201Entry {
    /// NAS-Bench-201 benchmark index.
    pub index: usize,
    /// Test accuracy (%) after 200 epochs, averaged over seeds.
    pub cifar10: f64,
    pub cifar100: f64,
    pub imagenet16_120: f64,
}

/// The table, indexed by cell.
#[derive(Clone, Debug)]
pub struct Nb201Table {
    by_code: Vec<Option<Nb201Entry>>,
}

impl Nb201Table {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::util::read_limited(path, 256 << 20, "a NAS-Bench-201 table")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::invalid(format!("{}: not UTF-8 text", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| Error::invalid("the NB201 table is empty"))?
            .split(',')
            .map(str::trim)
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|&h| h == name)
                .ok_or_else(|| Error::invalid(format!("the NB201 table has no column {name}")))
        };
        let (c10, c100, inet, arch) = (
            col("CIFAR10TestAccuracy200Epochs")?,
            col("CIFAR100TestAccuracy200Epochs")?,
            col("ImageNetTestAccuracy200Epochs")?,
            col("ArchitectureString")?,
        );
        let mut by_code = vec![None; NUM_ARCHS];
        let mut rows = 0;
        for (index, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |i: usize| {
                f.get(i)
                    .copied()
                    .ok_or_else(|| Error::invalid(format!("row {index} has {} fields", f.len())))
            };
            let num = |i: usize| -> Result<f64> {
                get(i)?
                    .parse()
                    .map_err(|_| Error::invalid(format!("row {index}: `{}` is not a number", f[i])))
            };
            let a: Nb201Arch = get(arch)?.parse()?;
            by_code[a.code()] = Some(Nb201Entry {
                index,
                cifar10: num(c10)?,
                cifar100: num(c100)?,
                imagenet16_120: num(inet)?,
            });
            rows += 1;
        }
        if rows == 0 {
            return Err(Error::invalid("the NB201 table has no rows"));
        }
        Ok(Nb201Table { by_code })
    }

    pub fn get(&self, a: &Nb201Arch) -> Option<&Nb201Entry> {
        self.by_code[a.code()].as_ref()
    }

    /// One value of every cell's entry (e.g. `|e| e.cifar10`), in cell-code order; an error
    /// names the first cell the table lacks.
    pub fn column(&self, value: impl Fn(&Nb201Entry) -> f64) -> Result<Vec<f64>> {
        Nb201Arch::all()
            .map(|a| {
                self.get(&a).map(&value).ok_or_else(|| {
                    Error::invalid(format!("the NAS-Bench-201 table has no row for {a}"))
                })
            })
            .collect()
    }

    /// Number of cells the table covers.
    pub fn len(&self) -> usize {
        self.by_code.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries by benchmark index.
    pub fn entries(&self) -> HashMap<usize, (Nb201Arch, Nb201Entry)> {
        self.by_code
            .iter()
            .enumerate()
            .filter_map(|(c, e)| e.map(|e| (e.index, (Nb201Arch::from_code(c).expect("code"), e))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_nats_layout() {
        let t = "CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,ArchitectureString,UniqueString\n\
                 93.5,70.1,44.0,|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|,x\n\
                 10.0,1.0,0.8,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,y\n";
        let tab = Nb201Table::parse(t).unwrap();
        assert_eq!(tab.len(), 2);
        let a: Nb201Arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
            .parse()
            .unwrap();
        let e = tab.get(&a).unwrap();
        assert_eq!((e.index, e.cifar10), (1, 10.0));
        assert!(Nb201Table::parse("a,b\n1,2\n")
            .unwrap_err()
            .to_string()
            .contains("no column"));
    }
}
