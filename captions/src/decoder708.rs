//! CEA-708 decoding for one service, with our own window model: the DTVCC
//! packets are assembled from the `cc_data` triplets, `cea708-types` splits
//! them into service blocks and codes, and the codes of the chosen service
//! drive eight windows (define, current, pen location, text, carriage
//! return with roll-up, backspace, form feed; display, hide, toggle, clear,
//! delete, reset). A cue is the text of the visible windows (by priority,
//! then id), from when it appears until it changes or goes.
//!
//! Not modelled: pen and window styles, colours, justification and print
//! direction (WebVTT gets the text), and `DLY`/`DLC` (commands apply at
//! once).

use cea708_types::tables::{Code, WindowBits};
use cea708_types::DTVCCPacket;

use crate::Cue;

/// The largest DTVCC packet (a size code of 0).
const MAX_PACKET: usize = 128;
/// Rows and columns a window may have at most (CEA-708: 12 rows, 42 columns).
const MAX_ROWS: usize = 15;
const MAX_COLS: usize = 42;

#[derive(Clone)]
struct Window {
    priority: u8,
    visible: bool,
    rows: Vec<Vec<char>>,
    cols: usize,
    pen: (usize, usize),
}

impl Window {
    fn new(rows: usize, cols: usize, priority: u8, visible: bool) -> Window {
        let rows = rows.clamp(1, MAX_ROWS);
        Window {
            priority,
            visible,
            rows: vec![Vec::new(); rows],
            cols: cols.clamp(1, MAX_COLS),
            pen: (0, 0),
        }
    }

    fn clear(&mut self) {
        for r in &mut self.rows {
            r.clear();
        }
        self.pen = (0, 0);
    }

    fn put(&mut self, c: char) {
        let (row, col) = self.pen;
        if col >= self.cols {
            return;
        }
        let line = &mut self.rows[row];
        while line.len() < col {
            line.push(' ');
        }
        if col < line.len() {
            line[col] = c;
        } else {
            line.push(c);
        }
        self.pen.1 = col + 1;
    }

    /// Carriage return: the next row, scrolling the window up (roll-up)
    /// when the pen is on its last row.
    fn carriage_return(&mut self) {
        if self.pen.0 + 1 >= self.rows.len() {
            self.rows.remove(0);
            self.rows.push(Vec::new());
        } else {
            self.pen.0 += 1;
        }
        self.pen.1 = 0;
    }

    fn text(&self) -> String {
        let lines: Vec<String> = self
            .rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        lines.join("\n")
    }
}

/// A decoder for one CEA-708 service (1..=63).
pub struct Cea708Decoder {
    service: u8,
    packet: Vec<u8>,
    packet_size: usize,
    windows: [Option<Window>; 8],
    current: Option<usize>,
    /// The cue on screen: (start, text).
    showing: Option<(i64, String)>,
    finished: Vec<Cue>,
}

impl std::fmt::Debug for Cea708Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cea708Decoder")
            .field("service", &self.service)
            .field("showing", &self.showing)
            .finish()
    }
}

impl Cea708Decoder {
    pub fn new(service: u8) -> Cea708Decoder {
        Cea708Decoder {
            service,
            packet: Vec::with_capacity(MAX_PACKET),
            packet_size: 0,
            windows: Default::default(),
            current: None,
            showing: None,
            finished: Vec::new(),
        }
    }

    /// Feeds the triplets of one captions frame at its `pts` (708 data comes
    /// in decode order, which for captions is presentation order). Returns
    /// the cues that ended.
    pub fn push(&mut self, pts: i64, triplets: &[u8]) -> Vec<Cue> {
        for t in triplets.chunks_exact(3) {
            let valid = t[0] & 0x04 != 0;
            match t[0] & 0x03 {
                3 if valid => {
                    self.packet.clear();
                    let code = usize::from(t[1] & 0x3f);
                    self.packet_size = if code == 0 { MAX_PACKET } else { code * 2 };
                    self.packet.extend_from_slice(&t[1..3]);
                    self.packet_done(pts);
                }
                2 if valid && !self.packet.is_empty() => {
                    self.packet.extend_from_slice(&t[1..3]);
                    self.packet_done(pts);
                }
                _ => {}
            }
        }
        std::mem::take(&mut self.finished)
    }

    /// Ends the cue on screen at `pts` (the end of the stream).
    pub fn flush(&mut self, pts: i64) -> Vec<Cue> {
        if let Some((start, text)) = self.showing.take() {
            self.finish(start, pts, text);
        }
        std::mem::take(&mut self.finished)
    }

    /// The cue on screen now, ended at `now` (it stays on screen).
    pub fn showing(&self, now: i64) -> Option<Cue> {
        self.showing.as_ref().map(|(start, text)| Cue {
            start: *start,
            end: now.max(*start),
            text: text.clone(),
        })
    }

    fn packet_done(&mut self, pts: i64) {
        if self.packet.len() < self.packet_size {
            return;
        }
        let Ok(p) = DTVCCPacket::parse(&self.packet[..self.packet_size]) else {
            self.packet.clear();
            return;
        };
        self.packet.clear();
        for s in p.services() {
            if s.number() == self.service {
                for c in s.codes() {
                    self.apply(c);
                }
            }
        }
        self.update(pts);
    }

    fn each(&mut self, bits: WindowBits, f: impl Fn(&mut Option<Window>)) {
        let bits = u8::from(bits);
        for (i, w) in self.windows.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                f(w);
            }
        }
    }

    fn apply(&mut self, code: &Code) {
        match code {
            Code::DefineWindow(a) => {
                let id = usize::from(a.window_id & 7);
                let rows = usize::from(a.row_count) + 1;
                let cols = usize::from(a.column_count) + 1;
                match &mut self.windows[id] {
                    Some(w) => {
                        w.priority = a.priority;
                        w.visible = a.visible;
                    }
                    slot => *slot = Some(Window::new(rows, cols, a.priority, a.visible)),
                }
                self.current = Some(id);
            }
            Code::SetCurrentWindow0 => self.set_current(0),
            Code::SetCurrentWindow1 => self.set_current(1),
            Code::SetCurrentWindow2 => self.set_current(2),
            Code::SetCurrentWindow3 => self.set_current(3),
            Code::SetCurrentWindow4 => self.set_current(4),
            Code::SetCurrentWindow5 => self.set_current(5),
            Code::SetCurrentWindow6 => self.set_current(6),
            Code::SetCurrentWindow7 => self.set_current(7),
            Code::ClearWindows(b) => self.each(*b, |w| {
                if let Some(w) = w {
                    w.clear();
                }
            }),
            Code::DisplayWindows(b) => self.each(*b, |w| {
                if let Some(w) = w {
                    w.visible = true;
                }
            }),
            Code::HideWindows(b) => self.each(*b, |w| {
                if let Some(w) = w {
                    w.visible = false;
                }
            }),
            Code::ToggleWindows(b) => self.each(*b, |w| {
                if let Some(w) = w {
                    w.visible = !w.visible;
                }
            }),
            Code::DeleteWindows(b) => {
                self.each(*b, |w| *w = None);
                if self.current.is_some_and(|c| self.windows[c].is_none()) {
                    self.current = None;
                }
            }
            Code::Reset => {
                self.windows = Default::default();
                self.current = None;
            }
            Code::SetPenLocation(a) => {
                if let Some(w) = self.window() {
                    let row = usize::from(a.row).min(w.rows.len() - 1);
                    let col = usize::from(a.column).min(w.cols);
                    w.pen = (row, col);
                }
            }
            Code::CR => {
                if let Some(w) = self.window() {
                    w.carriage_return();
                }
            }
            Code::HCR => {
                if let Some(w) = self.window() {
                    let row = w.pen.0;
                    w.rows[row].clear();
                    w.pen.1 = 0;
                }
            }
            Code::FF => {
                if let Some(w) = self.window() {
                    w.clear();
                }
            }
            Code::BS => {
                if let Some(w) = self.window() {
                    if w.pen.1 > 0 {
                        w.pen.1 -= 1;
                        let (row, col) = w.pen;
                        if col < w.rows[row].len() {
                            w.rows[row][col] = ' ';
                        }
                    }
                }
            }
            other => {
                if let Some(c) = other.char() {
                    if let Some(w) = self.window() {
                        w.put(c);
                    }
                }
            }
        }
    }

    fn set_current(&mut self, id: usize) {
        if self.windows[id].is_some() {
            self.current = Some(id);
        }
    }

    fn window(&mut self) -> Option<&mut Window> {
        self.windows[self.current?].as_mut()
    }

    /// The text of the visible windows, highest priority (lowest number) first.
    fn screen(&self) -> String {
        let mut visible: Vec<(u8, usize, String)> = self
            .windows
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let w = w.as_ref().filter(|w| w.visible)?;
                Some((w.priority, i, w.text()))
            })
            .filter(|(_, _, t)| !t.is_empty())
            .collect();
        visible.sort();
        let texts: Vec<String> = visible.into_iter().map(|(_, _, t)| t).collect();
        texts.join("\n")
    }

    fn update(&mut self, pts: i64) {
        let text = self.screen();
        if self.showing.as_ref().map(|(_, t)| t.as_str()) == Some(text.as_str()) {
            return;
        }
        if let Some((start, old)) = self.showing.take() {
            self.finish(start, pts, old);
        }
        if !text.is_empty() {
            self.showing = Some((pts, text));
        }
    }

    /// A cue that was on screen from `start` to `end` (none if it never
    /// lasted: replaced within the same frame, or time went backwards).
    fn finish(&mut self, start: i64, end: i64, text: String) {
        if end > start {
            self.finished.push(Cue { start, end, text });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::Script;

    fn decode(script: &str, service: u8, frames: usize) -> Vec<Cue> {
        let s = Script::parse(script).unwrap();
        let mut d = Cea708Decoder::new(service);
        let mut cues = Vec::new();
        for (i, t) in s.render(frames, 30).unwrap().iter().enumerate() {
            cues.extend(d.push(i as i64 * 3000, t));
        }
        cues.extend(d.flush(frames as i64 * 3000));
        cues
    }

    #[test]
    fn a_service_decodes_to_timed_cues() {
        let cues = decode(
            "SERVICE1 1.0 3.5 - Hello service one|second row\nSERVICE1 4.0 6.0 - Again",
            1,
            210,
        );
        let texts: Vec<&str> = cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Hello service one\nsecond row", "Again"]);
        // Within a few frames of the script's times (the packets take frames).
        let near = |t: i64, s: f64| (t as f64 / 90_000.0 - s).abs() < 0.3;
        assert!(
            near(cues[0].start, 1.0) && near(cues[0].end, 3.5),
            "{cues:?}"
        );
        assert!(
            near(cues[1].start, 4.0) && near(cues[1].end, 6.0),
            "{cues:?}"
        );
    }

    #[test]
    fn other_services_and_garbage_are_ignored() {
        assert!(decode("SERVICE2 1.0 3.5 - Not ours", 1, 120).is_empty());
        let mut d = Cea708Decoder::new(1);
        assert!(d
            .push(0, &[0xff, 0x02, 0x21, 0xfe, 0xff, 0xff, 0xfe, 0x00])
            .is_empty());
        assert!(d.push(0, &[0xff; 300]).is_empty());
        assert!(d.flush(1).is_empty());
    }

    #[test]
    fn roll_up_scrolls_and_backspace_erases() {
        let mut w = Window::new(2, 10, 0, true);
        for c in "ab".chars() {
            w.put(c);
        }
        w.carriage_return();
        w.put('c');
        w.carriage_return();
        w.put('d');
        assert_eq!(w.text(), "c\nd");
        w.put('x');
        w.pen.1 -= 1;
        assert_eq!(w.rows[1], vec!['d', 'x']);
    }
}
