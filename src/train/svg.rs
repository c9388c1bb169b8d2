//! A minimal SVG plotter for the reports (scatter and strip plots on linear axes).

use std::fmt::Write;

/// A plot area with linear axes, ticks and labels; marks are added in data coordinates.
pub struct Plot {
    w: f64,
    h: f64,
    m: f64,
    x: (f64, f64),
    y: (f64, f64),
    body: String,
}

impl Plot {
    /// A `w`x`h` plot over `x` and `y` data ranges, with a title and axis labels. The x axis
    /// gets ticks every `x_step` unless `x_ticks` names the positions (categorical axes).
    pub fn new(w: f64, h: f64, x: (f64, f64), y: (f64, f64), title: &str) -> Self {
        let mut body = String::new();
        let _ = write!(
            body,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
            w / 2.0,
            escape(title)
        );
        let m = 60.0;
        let _ = writeln!(
            body,
            "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            h - m,
            w - m,
            h - m
        );
        let _ = writeln!(
            body,
            "<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>",
            h - m
        );
        Plot {
            w,
            h,
            m,
            x,
            y,
            body,
        }
    }

    pub fn px(&self, x: f64) -> f64 {
        self.m + (x - self.x.0) / (self.x.1 - self.x.0) * (self.w - 2.0 * self.m)
    }

    pub fn py(&self, y: f64) -> f64 {
        self.h - self.m - (y - self.y.0) / (self.y.1 - self.y.0) * (self.h - 2.0 * self.m)
    }

    /// Labels the x axis at the given positions.
    pub fn x_ticks(&mut self, ticks: &[(f64, String)], label: &str) {
        for (x, t) in ticks {
            let _ = writeln!(
                self.body,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                self.px(*x),
                self.h - self.m + 16.0,
                escape(t)
            );
        }
        let _ = writeln!(
            self.body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            self.w / 2.0,
            self.h - 16.0,
            escape(label)
        );
    }

    /// Labels the y axis with `steps + 1` evenly spaced ticks, `decimals` after the point.
    pub fn y_ticks(&mut self, steps: usize, decimals: usize, label: &str) {
        for i in 0..=steps {
            let t = self.y.0 + (self.y.1 - self.y.0) * i as f64 / steps as f64;
            let _ = writeln!(
                self.body,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:.decimals$}</text>",
                self.m - 6.0,
                self.py(t) + 4.0
            );
        }
        let c = self.h / 2.0;
        let _ = writeln!(self.body, "<text x=\"16\" y=\"{c}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {c})\">{}</text>", escape(label));
    }

    pub fn circle(&mut self, x: f64, y: f64, r: f64, color: &str) {
        let _ = writeln!(
            self.body,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{color}\" fill-opacity=\"0.8\"/>",
            self.px(x),
            self.py(y)
        );
    }

    /// A line between two data points; `dash` draws it dashed.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), color: &str, dash: bool) {
        let d = if dash {
            " stroke-dasharray=\"5,4\""
        } else {
            ""
        };
        let _ = writeln!(
            self.body,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"{d}/>",
            self.px(a.0),
            self.py(a.1),
            self.px(b.0),
            self.py(b.1)
        );
    }

    /// Text anchored at a data point's left end.
    pub fn text(&mut self, x: f64, y: f64, t: &str) {
        let _ = writeln!(
            self.body,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            self.px(x),
            self.py(y),
            escape(t)
        );
    }

    pub fn finish(mut self) -> String {
        self.body += "</svg>\n";
        self.body
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
