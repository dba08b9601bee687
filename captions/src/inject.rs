//! Writing captions into H.264, for sample media and tests.
//!
//! The extractor's mirror image: a caption [`Script`] becomes one `cc_data`
//! per video frame (608 pairs for field 1 and field 2, then 708 DTVCC
//! packets), each wrapped in an SEI NAL unit ([`sei_nal`]) and inserted
//! before the first slice of its access unit ([`inject_annexb`]).
//!
//! Script format, one caption per line (`#` starts a comment):
//! ```text
//! CC1 1.0 3.5 popon Hello from Banyan|second line
//! CC3 1.0 3.5 rollup2 Hola desde Banyan
//! CC1 4.0 6.0 painton Painted text
//! SERVICE1 1.0 3.5 - Hello service one
//! ```
//! Fields: channel, start and end in seconds, style (`popon`, `rollup2`,
//! `rollup3`, `rollup4`, `painton`; ignored for 708 services), text with `|`
//! between rows. Pop-on captions appear exactly at their start frame (End Of
//! Caption), roll-up and paint-on text is typed from the start frame on, two
//! characters per frame. Every caption is erased at its end. Only one 608
//! channel per field may be used (CC1 or CC2, CC3 or CC4).

use cea608_types::tables::{
    Channel as Ch608, Code as Code608, Control, ControlCode, Field, PreambleAddressCode,
    PreambleType,
};
use cea708_types::tables::{
    Anchor, Code as Code708, DefineWindowArgs, SetPenLocationArgs, WindowBits,
};
use cea708_types::DTVCCPacket;

use crate::extract::annexb_nals;
use crate::Channel;

/// Triplets per frame at 30 fps (ATSC: 600 per second).
pub const CC_COUNT_30FPS: usize = 20;

/// Wraps `triplets` in a `cc_data()` structure announcing `cc_count` triplets
/// (normally `triplets.len() / 3`; tests pass other values to lie).
pub fn cc_data_bytes(triplets: &[u8], cc_count: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(triplets.len() + 3);
    // process_em_data_flag=1, process_cc_data_flag=1, additional_data_flag=0
    v.push(0xc0 | (cc_count & 0x1f));
    v.push(0xff); // em_data
    v.extend_from_slice(triplets);
    v.push(0xff); // marker_bits
    v
}

/// A complete SEI NAL unit (header byte to trailing bits, emulation
/// prevention applied) holding one ATSC A/53 `GA94` user data message.
pub fn sei_nal(cc_data: &[u8]) -> Vec<u8> {
    let mut payload = vec![0xb5, 0x00, 0x31, b'G', b'A', b'9', b'4', 0x03];
    payload.extend_from_slice(cc_data);
    let mut rbsp = vec![4u8]; // payloadType: user_data_registered_itu_t_t35
    let mut size = payload.len();
    while size >= 255 {
        rbsp.push(0xff);
        size -= 255;
    }
    rbsp.push(size as u8);
    rbsp.extend_from_slice(&payload);
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = vec![0x06];
    nal.extend_from_slice(&escape_rbsp(&rbsp));
    nal
}

/// Adds emulation-prevention bytes (`00 00 0x` with x <= 3 becomes `00 00 03 0x`).
pub fn escape_rbsp(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Splits an Annex B elementary stream into access units, as NAL lists.
/// A new access unit starts at an access unit delimiter, at an SPS/PPS/SEI
/// after a slice, or at a slice with `first_mb_in_slice == 0` after a slice.
pub fn access_units(stream: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut aus: Vec<Vec<&[u8]>> = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    let mut has_vcl = false;
    for nal in annexb_nals(stream) {
        let Some(&h) = nal.first() else { continue };
        let ty = h & 0x1f;
        let vcl = (1..=5).contains(&ty);
        let starts = match ty {
            9 => true,
            6..=8 => has_vcl,
            // first_mb_in_slice is ue(v): 0 encodes as a single 1 bit.
            1..=5 => has_vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0),
            _ => false,
        };
        if starts && !cur.is_empty() {
            aus.push(std::mem::take(&mut cur));
            has_vcl = false;
        }
        has_vcl |= vcl;
        cur.push(nal);
    }
    if !cur.is_empty() {
        aus.push(cur);
    }
    aus
}

/// Writes access units back as Annex B, inserting `sei[i]` (if any) before
/// the first slice of access unit `i`.
pub fn inject_annexb(aus: &[Vec<&[u8]>], sei: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        let mut pending = sei.get(i).and_then(|s| s.as_deref());
        for nal in au {
            if (1..=5).contains(&(nal[0] & 0x1f)) {
                if let Some(s) = pending.take() {
                    out.extend_from_slice(&[0, 0, 0, 1]);
                    out.extend_from_slice(s);
                }
            }
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// How a 608 caption is painted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    PopOn,
    RollUp(u8),
    PaintOn,
}

/// One scripted caption.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptCaption {
    pub channel: Channel,
    pub start: f64,
    pub end: f64,
    pub style: Style,
    pub rows: Vec<String>,
}

/// A caption script (see the module docs for the text form).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    pub captions: Vec<ScriptCaption>,
}

impl Script {
    pub fn parse(text: &str) -> Result<Script, String> {
        let mut captions = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what: &str| format!("line {}: {what}: {line}", n + 1);
            let mut parts = line.splitn(5, char::is_whitespace);
            let mut next = || parts.next().filter(|s| !s.is_empty());
            let channel = next()
                .and_then(Channel::parse)
                .ok_or_else(|| err("bad channel"))?;
            let start: f64 = next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| err("bad start"))?;
            let end: f64 = next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| err("bad end"))?;
            let style = match next().ok_or_else(|| err("no style"))? {
                "popon" => Style::PopOn,
                "painton" => Style::PaintOn,
                "rollup2" => Style::RollUp(2),
                "rollup3" => Style::RollUp(3),
                "rollup4" => Style::RollUp(4),
                "-" if matches!(channel, Channel::Service(_)) => Style::PopOn,
                _ => return Err(err("bad style")),
            };
            let text = next().ok_or_else(|| err("no text"))?;
            let rows: Vec<String> = text.split('|').map(|r| r.trim().to_string()).collect();
            if !(start >= 0.0 && end > start) || rows.len() > 4 {
                return Err(err("bad times or more than 4 rows"));
            }
            if rows.iter().any(|r| r.chars().count() > 32) {
                return Err(err("a row is longer than 32 characters"));
            }
            captions.push(ScriptCaption {
                channel,
                start,
                end,
                style,
                rows,
            });
        }
        captions.sort_by(|a, b| a.start.total_cmp(&b.start));
        Ok(Script { captions })
    }

    /// The triplets of every frame (`frames` frames at `fps`), [`CC_COUNT_30FPS`]
    /// scaled to the rate: field 1 pair, field 2 pair, then 708 triplets,
    /// padded. Errors when captions do not fit their time slots.
    pub fn render(&self, frames: usize, fps: u32) -> Result<Vec<Vec<u8>>, String> {
        let cc_count = (600 / fps.max(1)) as usize;
        if cc_count < 3 {
            return Err("frame rate too high".into());
        }
        let mut fields: [Vec<Option<[u8; 2]>>; 2] = [vec![None; frames], vec![None; frames]];
        let mut field_channel: [Option<Channel>; 2] = [None, None];
        let mut dtvcc: Vec<Vec<[u8; 3]>> = vec![Vec::new(); frames];
        let frame_of = |t: f64| (t * fps as f64).round() as usize;
        let mut seq = 0u8;

        // Pass 1: the pairs that must land on exact frames (pop-on show/clear).
        for c in &self.captions {
            let Channel::Cc(n) = c.channel else { continue };
            let (field, ch) = field_channel_of(n);
            let fi = (field != Field::ONE) as usize;
            match field_channel[fi] {
                Some(other) if other != c.channel => {
                    return Err(format!("{} and {other} share a field", c.channel))
                }
                _ => field_channel[fi] = Some(c.channel),
            }
            let (s, e) = (frame_of(c.start), frame_of(c.end));
            let ctl = |control| control_pair(field, ch, control);
            if c.style == Style::PopOn {
                place_at(&mut fields[fi], s, &[ctl(Control::EndOfCaption); 2])?;
            }
            let next_start = self
                .captions
                .iter()
                .filter(|o| o.channel == c.channel && o.start > c.start)
                .map(|o| frame_of(o.start))
                .min();
            // A following caption replaces this one; no erase needed then.
            if next_start.is_none_or(|ns| ns > e + 2) {
                place_at(&mut fields[fi], e, &[ctl(Control::EraseDisplayedMemory); 2])?;
            }
        }
        // Pass 2: loading and typing.
        let mut last_show: [usize; 4] = [0; 4];
        for c in &self.captions {
            match c.channel {
                Channel::Cc(n) => {
                    let (field, ch) = field_channel_of(n);
                    let fi = (field != Field::ONE) as usize;
                    let ctl = |control| control_pair(field, ch, control);
                    let s = frame_of(c.start);
                    let first_row = 15 - c.rows.len();
                    match c.style {
                        Style::PopOn => {
                            let mut seq = vec![ctl(Control::ResumeCaptionLoading); 2];
                            seq.extend([ctl(Control::EraseNonDisplayedMemory); 2]);
                            for (i, row) in c.rows.iter().enumerate() {
                                seq.extend([pac(field, ch, (first_row + i) as u8); 2]);
                                seq.extend(text_pairs(row, ch)?);
                            }
                            let lo = last_show[n as usize - 1];
                            place_before(&mut fields[fi], lo, s, &seq)
                                .map_err(|e| format!("{} at {}: {e}", c.channel, c.start))?;
                            last_show[n as usize - 1] = s + 2;
                        }
                        Style::RollUp(rows) => {
                            let mode = match rows {
                                2 => Control::RollUp2,
                                3 => Control::RollUp3,
                                _ => Control::RollUp4,
                            };
                            let mut seq = Vec::new();
                            for row in &c.rows {
                                seq.extend([ctl(mode); 2]);
                                seq.extend([ctl(Control::CarriageReturn); 2]);
                                seq.extend([pac(field, ch, 14); 2]);
                                seq.extend(text_pairs(row, ch)?);
                            }
                            place_from(&mut fields[fi], s, frame_of(c.end), &seq)
                                .map_err(|e| format!("{} at {}: {e}", c.channel, c.start))?;
                        }
                        Style::PaintOn => {
                            let mut seq = vec![ctl(Control::ResumeDirectionCaptioning); 2];
                            for (i, row) in c.rows.iter().enumerate() {
                                seq.extend([pac(field, ch, (first_row + i) as u8); 2]);
                                seq.extend(text_pairs(row, ch)?);
                            }
                            place_from(&mut fields[fi], s, frame_of(c.end), &seq)
                                .map_err(|e| format!("{} at {}: {e}", c.channel, c.start))?;
                        }
                    }
                }
                Channel::Service(svc) => {
                    let s = frame_of(c.start);
                    let e = frame_of(c.end);
                    let mut show = vec![
                        Code708::DeleteWindows(WindowBits::ZERO),
                        Code708::DefineWindow(DefineWindowArgs::new(
                            0,
                            0,
                            Anchor::BottomMiddle,
                            true,
                            99,
                            50,
                            c.rows.len() as u8 - 1,
                            31,
                            true,
                            true,
                            true,
                            1,
                            1,
                        )),
                        Code708::SetPenLocation(SetPenLocationArgs::new(0, 0)),
                    ];
                    for (i, row) in c.rows.iter().enumerate() {
                        if i > 0 {
                            show.push(Code708::CR);
                        }
                        for ch in row.chars() {
                            show.push(
                                Code708::from_char(ch)
                                    .ok_or_else(|| format!("no 708 code for {ch:?}"))?,
                            );
                        }
                    }
                    let hide = [Code708::DeleteWindows(WindowBits::ZERO)];
                    for (at, codes) in [(s, &show[..]), (e, &hide[..])] {
                        for packet in dtvcc_packets(svc, codes, &mut seq)? {
                            place_dtvcc(&mut dtvcc, at, &packet, cc_count - 2)?;
                        }
                    }
                }
            }
        }

        let mut out = Vec::with_capacity(frames);
        for f in 0..frames {
            let mut t = Vec::with_capacity(cc_count * 3);
            for (fi, kind) in [(0usize, 0xfcu8), (1, 0xfd)] {
                let pair = fields[fi][f].unwrap_or([0x80, 0x80]);
                t.extend_from_slice(&[kind, pair[0], pair[1]]);
            }
            for trip in &dtvcc[f] {
                t.extend_from_slice(trip);
            }
            while t.len() < cc_count * 3 {
                t.extend_from_slice(&[0xfa, 0x00, 0x00]);
            }
            out.push(t);
        }
        Ok(out)
    }
}

fn field_channel_of(cc: u8) -> (Field, Ch608) {
    match cc {
        1 => (Field::ONE, Ch608::ONE),
        2 => (Field::ONE, Ch608::TWO),
        3 => (Field::TWO, Ch608::ONE),
        _ => (Field::TWO, Ch608::TWO),
    }
}

fn control_pair(field: Field, ch: Ch608, control: Control) -> [u8; 2] {
    let mut b = [0u8; 2];
    Code608::Control(ControlCode::new(field, ch, control)).write_into(&mut b);
    b
}

fn pac(field: Field, ch: Ch608, row: u8) -> [u8; 2] {
    control_pair(
        field,
        ch,
        Control::PreambleAddress(PreambleAddressCode::new(row, false, PreambleType::Indent0)),
    )
}

/// Basic-character pairs for a row (special characters as their own pair).
fn text_pairs(row: &str, ch: Ch608) -> Result<Vec<[u8; 2]>, String> {
    let mut out = Vec::new();
    let mut half: Option<u8> = None;
    for c in row.chars() {
        let code = Code608::from_char(c, ch).ok_or_else(|| format!("no 608 code for {c:?}"))?;
        let mut b = [0u8; 2];
        let n = code.write_into(&mut b);
        if n == 1 {
            match half.take() {
                Some(first) => out.push([first, b[0]]),
                None => half = Some(b[0]),
            }
        } else {
            if let Some(first) = half.take() {
                out.push([first, 0x80]);
            }
            out.push(b);
        }
    }
    if let Some(first) = half {
        out.push([first, 0x80]);
    }
    Ok(out)
}

fn place_at(slots: &mut [Option<[u8; 2]>], at: usize, pairs: &[[u8; 2]]) -> Result<(), String> {
    for (i, p) in pairs.iter().enumerate() {
        match slots.get_mut(at + i) {
            Some(s @ None) => *s = Some(*p),
            Some(Some(_)) => return Err(format!("frame {} is taken", at + i)),
            None => return Err(format!("frame {} is past the end", at + i)),
        }
    }
    Ok(())
}

/// Places `pairs` in order into the free slots just before `before`, not earlier than `lo`.
fn place_before(
    slots: &mut [Option<[u8; 2]>],
    lo: usize,
    before: usize,
    pairs: &[[u8; 2]],
) -> Result<(), String> {
    let free: Vec<usize> = (lo..before.min(slots.len()))
        .rev()
        .filter(|i| slots[*i].is_none())
        .take(pairs.len())
        .collect();
    if free.len() < pairs.len() {
        return Err(format!(
            "needs {} free frames before, has {}",
            pairs.len(),
            free.len()
        ));
    }
    for (slot, p) in free.iter().rev().zip(pairs) {
        slots[*slot] = Some(*p);
    }
    Ok(())
}

/// Places `pairs` in order into the free slots from `from`, before `until`.
fn place_from(
    slots: &mut [Option<[u8; 2]>],
    from: usize,
    until: usize,
    pairs: &[[u8; 2]],
) -> Result<(), String> {
    let free: Vec<usize> = (from..until.min(slots.len()))
        .filter(|i| slots[*i].is_none())
        .take(pairs.len())
        .collect();
    if free.len() < pairs.len() {
        return Err(format!(
            "needs {} free frames, has {}",
            pairs.len(),
            free.len()
        ));
    }
    for (slot, p) in free.iter().zip(pairs) {
        slots[*slot] = Some(*p);
    }
    Ok(())
}

/// DTVCC packets (as bytes) carrying `codes` for one service.
fn dtvcc_packets(service: u8, codes: &[Code708], seq: &mut u8) -> Result<Vec<Vec<u8>>, String> {
    let mut packets = Vec::new();
    let mut p = DTVCCPacket::new(*seq);
    for code in codes {
        if p.push_code(service, code.clone()).is_err() {
            packets.push(std::mem::replace(&mut p, {
                *seq = (*seq + 1) % 4;
                DTVCCPacket::new(*seq)
            }));
            p.push_code(service, code.clone())
                .map_err(|e| format!("708 code does not fit a packet: {e}"))?;
        }
    }
    if !p.is_empty() {
        packets.push(p);
        *seq = (*seq + 1) % 4;
    }
    packets
        .into_iter()
        .map(|p| {
            let mut b = Vec::new();
            p.write(&mut b).map_err(|e| e.to_string())?;
            Ok(b)
        })
        .collect()
}

fn place_dtvcc(
    frames: &mut [Vec<[u8; 3]>],
    from: usize,
    packet: &[u8],
    per_frame: usize,
) -> Result<(), String> {
    let mut trips = packet.chunks(2).enumerate().map(|(i, c)| {
        let kind = if i == 0 { 0xff } else { 0xfe };
        [kind, c[0], c.get(1).copied().unwrap_or(0)]
    });
    let mut next = trips.next();
    for f in frames.iter_mut().skip(from) {
        while f.len() < per_frame {
            match next {
                Some(t) => {
                    f.push(t);
                    next = trips.next();
                }
                None => return Ok(()),
            }
        }
    }
    if next.is_none() {
        Ok(())
    } else {
        Err("708 data runs past the last frame".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_inserts_prevention_bytes() {
        assert_eq!(
            escape_rbsp(&[0, 0, 1, 0, 0, 0, 5]),
            [0, 0, 3, 1, 0, 0, 3, 0, 5]
        );
        assert_eq!(escape_rbsp(&[0, 0, 4]), [0, 0, 4]);
    }

    #[test]
    fn script_parse_and_errors() {
        let s = Script::parse("# c\nCC1 1 2 popon Hi|there\nSERVICE1 0.5 2 - Yo\n").unwrap();
        assert_eq!(s.captions.len(), 2);
        assert_eq!(s.captions[0].channel, Channel::Service(1));
        assert_eq!(s.captions[1].rows, ["Hi", "there"]);
        assert!(Script::parse("CC9 1 2 popon x").is_err());
        assert!(Script::parse("CC1 2 1 popon x").is_err());
        assert!(Script::parse("CC1 1 2 fancy x").is_err());
        let s = Script::parse("CC1 1 2 popon a\nCC2 1 2 popon b").unwrap();
        assert!(s.render(90, 30).is_err(), "two channels in one field");
    }

    #[test]
    fn access_units_split_on_aud_and_first_mb() {
        let mut s = Vec::new();
        for nal in [
            &[0x09, 0xf0][..],
            &[0x67, 1],
            &[0x68, 1],
            &[0x65, 0x88],
            &[0x09, 0xf0],
            &[0x41, 0x9a],
            &[0x41, 0x9a],
            &[0x06, 5, 1, 0, 0x80],
            &[0x41, 0x9a],
        ] {
            s.extend_from_slice(&[0, 0, 0, 1]);
            s.extend_from_slice(nal);
        }
        let aus = access_units(&s);
        assert_eq!(
            aus.iter().map(|a| a.len()).collect::<Vec<_>>(),
            [4, 2, 1, 2]
        );
        let sei = vec![0x06, 0x04, 0x00, 0x80];
        let out = inject_annexb(&aus, &[Some(sei.clone()), None, None, None]);
        let nals: Vec<&[u8]> = annexb_nals(&out).collect();
        assert_eq!(nals[3], &sei[..]);
        assert_eq!(nals[4], &[0x65, 0x88]);
        assert_eq!(nals.len(), 10);
    }
}
