//! CEA-608 decoding with a screen model: from `cc_data` triplets to timed cues.

use cea608_types::tables::{Channel as Ch608, Field};
use cea608_types::{Cea608, Cea608State, Mode};

const ROWS: usize = 15;
const COLS: usize = 32;
/// Captions frames are reordered by pts over this many frames (B-frames put
/// decode order and presentation order apart).
const REORDER_DEPTH: usize = 4;
/// Paint-on and roll-up text typed directly on screen becomes a cue once the
/// typing pauses this long (90 kHz: 0.2 s), or at the next screen command.
const IDLE_COMMIT: i64 = 18_000;
/// Bound on finished cues held between two calls.
const MAX_PENDING_CUES: usize = 256;

/// A caption shown from `start` to `end` (90 kHz, the video's pts clock).
/// `text` has one line per caption row, joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start: i64,
    pub end: i64,
    pub text: String,
}

#[derive(Clone)]
struct Screen([[char; COLS]; ROWS]);

impl Screen {
    fn blank() -> Self {
        Screen([[' '; COLS]; ROWS])
    }

    fn clear(&mut self) {
        *self = Screen::blank();
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for row in &self.0 {
            let line: String = row.iter().collect();
            let line = line.trim();
            if !line.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(line);
            }
        }
        out
    }
}

/// Decodes one CEA-608 channel (CC1..CC4) into cues.
///
/// Our own screen model: a displayed and a non-displayed memory of 15 rows
/// by 32 columns. Pop-on text is loaded into the hidden memory and shown by
/// End Of Caption; paint-on text goes straight to the display; roll-up text
/// is typed on the base row and scrolled up by Carriage Return within a
/// window of 2, 3 or 4 rows. A cue starts when the displayed text changes:
/// at once for End Of Caption, Erase Displayed Memory and mode changes; for
/// text typed on the display (and roll-up scrolling) at the last change
/// once typing pauses for 0.2 s, or at the next screen command.
/// It ends when the next one starts or the screen is erased.
pub struct Cea608Decoder {
    field: Field,
    channel: Ch608,
    state: Cea608State,
    reorder: Vec<(i64, Vec<u8>)>,
    mode: Option<Mode>,
    displayed: Screen,
    hidden: Screen,
    row: usize,
    col: usize,
    /// The cue on screen: (start, text).
    current: Option<(i64, String)>,
    /// pts of the last character typed on the display not yet in a cue.
    dirty: Option<i64>,
    last_pts: Option<i64>,
    finished: Vec<Cue>,
}

impl std::fmt::Debug for Cea608Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cea608Decoder")
            .field("field", &self.field.id())
            .field("channel", &self.channel.id())
            .field("mode", &self.mode)
            .field("current", &self.current)
            .finish()
    }
}

impl Cea608Decoder {
    /// A decoder for CC`channel` (1..=4; other values are taken as 1).
    pub fn new(channel: u8) -> Self {
        let (field, ch) = match channel {
            2 => (Field::ONE, Ch608::TWO),
            3 => (Field::TWO, Ch608::ONE),
            4 => (Field::TWO, Ch608::TWO),
            _ => (Field::ONE, Ch608::ONE),
        };
        Cea608Decoder {
            field,
            channel: ch,
            state: Cea608State::default(),
            reorder: Vec::with_capacity(REORDER_DEPTH + 1),
            mode: None,
            displayed: Screen::blank(),
            hidden: Screen::blank(),
            row: ROWS - 1,
            col: 0,
            current: None,
            dirty: None,
            last_pts: None,
            finished: Vec::new(),
        }
    }

    /// Feeds the triplets of one captions frame (the payload of a
    /// [`banyan_relay::Track::Captions`] frame) at its `pts`. Frames may come
    /// in decode order; they are put in pts order over a few frames. Returns
    /// the cues that ended.
    pub fn push(&mut self, pts: i64, triplets: &[u8]) -> Vec<Cue> {
        let at = self.reorder.partition_point(|(p, _)| *p <= pts);
        self.reorder.insert(at, (pts, triplets.to_vec()));
        while self.reorder.len() > REORDER_DEPTH {
            let (p, t) = self.reorder.remove(0);
            self.process(p, &t);
        }
        std::mem::take(&mut self.finished)
    }

    /// Processes everything buffered and ends the cue on screen at `pts`
    /// (the end of the stream). Returns the cues that ended.
    pub fn flush(&mut self, pts: i64) -> Vec<Cue> {
        for (p, t) in std::mem::take(&mut self.reorder) {
            self.process(p, &t);
        }
        if let Some(d) = self.dirty {
            self.commit(d);
        }
        if let Some((start, text)) = self.current.take() {
            self.finish(start, pts.max(start), text);
        }
        std::mem::take(&mut self.finished)
    }

    /// The cue on screen now, ended at `now`, for a WebVTT segment that
    /// closes while it is still shown (it stays on screen after this call).
    pub fn showing(&self, now: i64) -> Option<Cue> {
        self.current.as_ref().map(|(start, text)| Cue {
            start: *start,
            end: now.max(*start),
            text: text.clone(),
        })
    }

    fn process(&mut self, pts: i64, triplets: &[u8]) {
        if let Some(d) = self.dirty {
            if pts.saturating_sub(d) >= IDLE_COMMIT {
                self.commit(d);
            }
        }
        self.last_pts = Some(pts);
        let want = if self.field == Field::ONE { 0 } else { 1 };
        for t in triplets.chunks_exact(3) {
            if t[0] & 0x04 == 0 || t[0] & 0x03 != want {
                continue;
            }
            match self.state.decode([t[1], t[2]]) {
                Ok(Some(cmd)) if cmd.channel() == self.channel => self.command(pts, cmd),
                _ => {}
            }
        }
    }

    fn command(&mut self, pts: i64, cmd: Cea608) {
        match cmd {
            Cea608::NewMode(_, mode) => {
                let was_rollup = self.mode.is_some_and(|m| m.is_rollup());
                if mode.is_rollup() && !was_rollup {
                    self.displayed.clear();
                    self.hidden.clear();
                    self.row = ROWS - 1;
                    self.col = 0;
                    self.mode = Some(mode);
                    self.commit(pts);
                } else {
                    if !mode.is_rollup() && self.dirty.is_some() {
                        self.commit(pts);
                    }
                    self.mode = Some(mode);
                }
            }
            Cea608::EraseDisplay(_) => {
                self.displayed.clear();
                self.commit(pts);
            }
            Cea608::EraseNonDisplay(_) => self.hidden.clear(),
            Cea608::EndOfCaption(_) => {
                std::mem::swap(&mut self.displayed, &mut self.hidden);
                self.mode = Some(Mode::PopOn);
                self.commit(pts);
            }
            Cea608::CarriageReturn(_) => {
                if let Some(rows) = self.mode.and_then(|m| m.rollup_rows()) {
                    let base = self.row;
                    let top = (base + 1).saturating_sub(rows as usize);
                    for r in top..base {
                        self.displayed.0[r] = self.displayed.0[r + 1];
                    }
                    // Rows above the window are not part of the roll-up.
                    for r in 0..top {
                        self.displayed.0[r] = [' '; COLS];
                    }
                    self.displayed.0[base] = [' '; COLS];
                    self.col = 0;
                    // The scroll shows together with the text typed after it.
                    self.touched(pts);
                }
            }
            Cea608::Backspace(_) => {
                if self.col > 0 {
                    self.col -= 1;
                    let row = self.row;
                    let col = self.col;
                    self.target().0[row][col] = ' ';
                    self.touched(pts);
                }
            }
            Cea608::DeleteToEndOfRow(_) => {
                let (row, col) = (self.row, self.col);
                for c in &mut self.target().0[row][col..] {
                    *c = ' ';
                }
                self.touched(pts);
            }
            Cea608::TabOffset(_, n) => self.col = (self.col + n as usize).min(COLS - 1),
            Cea608::Preamble(_, pac) => {
                let new_row = (pac.row() as usize).min(ROWS - 1);
                if let Some(rows) = self.mode.and_then(|m| m.rollup_rows()) {
                    let rows = rows as usize;
                    let new_row = new_row.max(rows - 1);
                    if new_row != self.row {
                        // Move the roll-up window to the new base row.
                        let old_top = (self.row + 1).saturating_sub(rows);
                        let window: Vec<[char; COLS]> =
                            self.displayed.0[old_top..=self.row].to_vec();
                        self.displayed.clear();
                        let new_top = new_row + 1 - window.len();
                        for (i, r) in window.into_iter().enumerate() {
                            self.displayed.0[new_top + i] = r;
                        }
                    }
                    self.row = new_row;
                } else {
                    self.row = new_row;
                }
                self.col = (pac.column() as usize).min(COLS - 1);
            }
            Cea608::MidRowChange(_, _) => self.put(pts, ' '),
            Cea608::Text(t) => {
                if t.needs_backspace && self.col > 0 {
                    self.col -= 1;
                }
                for c in [t.char1, t.char2].into_iter().flatten() {
                    self.put(pts, c);
                }
            }
        }
    }

    /// The memory characters go to in the current mode.
    fn target(&mut self) -> &mut Screen {
        match self.mode {
            Some(Mode::PopOn) => &mut self.hidden,
            _ => &mut self.displayed,
        }
    }

    fn put(&mut self, pts: i64, c: char) {
        if self.mode.is_none() {
            return;
        }
        let (row, col) = (self.row, self.col);
        self.target().0[row][col] = c;
        if self.col < COLS - 1 {
            self.col += 1;
        }
        self.touched(pts);
    }

    fn touched(&mut self, pts: i64) {
        if self.mode != Some(Mode::PopOn) {
            self.dirty = Some(pts);
        }
    }

    /// The displayed memory becomes the cue from `pts` on (if it changed).
    fn commit(&mut self, pts: i64) {
        self.dirty = None;
        let text = self.displayed.text();
        if self.current.as_ref().is_some_and(|(_, t)| *t == text) {
            return;
        }
        if let Some((start, old)) = self.current.take() {
            self.finish(start, pts, old);
        }
        if !text.is_empty() {
            self.current = Some((pts, text));
        }
    }

    fn finish(&mut self, start: i64, end: i64, text: String) {
        if end > start && self.finished.len() < MAX_PENDING_CUES {
            self.finished.push(Cue { start, end, text });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::Script;

    /// Renders a script at 30 fps and decodes `channel` frame by frame.
    fn decode(script: &str, channel: u8, seconds: usize) -> Vec<Cue> {
        let frames = Script::parse(script)
            .unwrap()
            .render(seconds * 30, 30)
            .unwrap();
        let mut d = Cea608Decoder::new(channel);
        let mut cues = Vec::new();
        for (i, t) in frames.iter().enumerate() {
            cues.extend(d.push(i as i64 * 3000, t));
        }
        cues.extend(d.flush(frames.len() as i64 * 3000));
        cues
    }

    fn cue(start: i64, end: i64, text: &str) -> Cue {
        Cue {
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn pop_on_shows_at_end_of_caption() {
        let cues = decode(
            "CC1 1 2.5 popon Hello|World\nCC1 3 4 popon Second one",
            1,
            5,
        );
        assert_eq!(
            cues,
            [
                cue(90_000, 225_000, "Hello\nWorld"),
                cue(270_000, 360_000, "Second one")
            ]
        );
        // Nothing on the other channels.
        assert!(decode("CC1 1 2 popon Hello", 3, 3).is_empty());
        assert!(decode("CC1 1 2 popon Hello", 2, 3).is_empty());
    }

    #[test]
    fn pop_on_replaced_without_erase() {
        let cues = decode("CC3 1 2 popon One\nCC3 2 3 popon Two", 3, 4);
        assert_eq!(
            cues,
            [cue(90_000, 180_000, "One"), cue(180_000, 270_000, "Two")]
        );
    }

    #[test]
    fn roll_up_scrolls() {
        let cues = decode(
            "CC1 1 6 rollup2 first line\nCC1 2 6 rollup2 second line\nCC1 3 6 rollup2 third line",
            1,
            7,
        );
        let texts: Vec<&str> = cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "first line",
                "first line\nsecond line",
                "second line\nthird line"
            ]
        );
        // Typed text becomes a cue when typing pauses, timed at the last
        // pair (RU, RU, CR, CR, PAC, PAC, 5 text pairs at 30 fps: frame 40).
        assert_eq!(cues[0].start, 40 * 3000, "{cues:?}");
        assert_eq!(cues[2].end, 540_000);
        for w in cues.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn paint_on_appears_directly() {
        let cues = decode("CC1 1 3 painton Painted|two rows", 1, 4);
        assert_eq!(cues.len(), 1, "{cues:?}");
        assert_eq!(cues[0].text, "Painted\ntwo rows");
        // RDC, RDC, PAC, PAC, 4 text pairs, PAC, PAC, 4 text pairs: 14 pairs from frame 30
        assert_eq!(cues[0].start, 43 * 3000);
        assert_eq!(cues[0].end, 270_000);
    }

    #[test]
    fn out_of_order_frames_are_reordered() {
        let frames = Script::parse("CC1 1 2 popon Hello")
            .unwrap()
            .render(90, 30)
            .unwrap();
        let mut d = Cea608Decoder::new(1);
        let mut order: Vec<usize> = (0..90).collect();
        // swap neighbours, as decode order does with one B-frame
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        let mut cues = Vec::new();
        for i in order {
            cues.extend(d.push(i as i64 * 3000, &frames[i]));
        }
        assert_eq!(d.showing(270_000), None);
        cues.extend(d.flush(270_000));
        assert_eq!(cues, [cue(90_000, 180_000, "Hello")]);
    }

    #[test]
    fn showing_reports_the_open_cue() {
        let frames = Script::parse("CC1 1 5 popon Hi")
            .unwrap()
            .render(180, 30)
            .unwrap();
        let mut d = Cea608Decoder::new(1);
        for (i, t) in frames.iter().take(90).enumerate() {
            assert!(d.push(i as i64 * 3000, t).is_empty());
        }
        assert_eq!(d.showing(270_000), Some(cue(90_000, 270_000, "Hi")));
    }

    #[test]
    fn garbage_is_ignored() {
        let mut d = Cea608Decoder::new(1);
        let junk: Vec<u8> = (0..=255u8)
            .flat_map(|b| [0xfc, b, b.wrapping_mul(7)])
            .collect();
        for i in 0..20 {
            d.push(i * 3000, &junk);
            d.push(i * 3000 + 1, &junk[..7]);
        }
        d.flush(100_000);
    }
}
