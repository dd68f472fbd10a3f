// Dates, time zones and labels. The API speaks UTC instants; people edit wall-clock times in a
// task's time zone, so conversions go through Intl (no library).

/** The browser's IANA zone, or UTC when it cannot tell. */
export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** Every IANA zone the browser knows (falls back to a short list). */
export function allZones() {
  try {
    const zones = Intl.supportedValuesOf('timeZone');
    return zones.includes('UTC') ? zones : ['UTC', ...zones];
  } catch {
    return ['UTC', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'America/Los_Angeles', 'Asia/Tokyo'];
  }
}

const partsFormats = new Map();

/** Wall-clock fields of instant `ms` in `zone`. */
function wallParts(ms, zone) {
  let format = partsFormats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    partsFormats.set(zone, format);
  }
  const parts = {};
  for (const { type, value } of format.formatToParts(new Date(ms))) parts[type] = Number(value);
  return parts;
}

/** Offset of `zone` from UTC at instant `ms`, in milliseconds. */
function offsetAt(ms, zone) {
  const p = wallParts(ms, zone);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/**
 * The instant at wall-clock `date` ("2026-12-01") and `time` ("09:30", default midnight) in `zone`.
 * A time in a spring-forward gap moves forward by the gap, like the server does.
 */
export function wallToInstant(date, time, zone) {
  const [y, m, d] = date.split('-').map(Number);
  const [hh, mm] = (time || '00:00').split(':').map(Number);
  const wall = Date.UTC(y, m - 1, d, hh, mm);
  let instant = wall - offsetAt(wall, zone);
  const corrected = wall - offsetAt(instant, zone);
  if (corrected !== instant) instant = Math.max(instant, corrected);
  return new Date(instant);
}

const pad = (n) => String(n).padStart(2, '0');

/** `{date: "YYYY-MM-DD", time: "HH:MM"}` of an instant in `zone`. */
export function instantToWall(iso, zone) {
  const p = wallParts(Date.parse(iso), zone);
  return { date: `${p.year}-${pad(p.month)}-${pad(p.day)}`, time: `${pad(p.hour)}:${pad(p.minute)}` };
}

/** Today's date in `zone` as "YYYY-MM-DD". */
export function todayIn(zone) {
  return instantToWall(new Date().toISOString(), zone).date;
}

/** "Tue, 1 Dec 2026, 09:30" in `zone` (with the zone's short name when it is not the browser's). */
export function formatInstant(iso, zone) {
  const options = { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit' };
  try {
    const sameZone = zone === browserZone();
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone, timeZoneName: sameZone ? undefined : 'short' })
      .format(new Date(iso));
  } catch {
    return new Date(iso).toLocaleString();
  }
}

/** A wall-clock "2026-12-01T09:00:00" (no zone) for display. */
export function formatLocal(naive) {
  const [date, time = '00:00'] = naive.split('T');
  const [y, m, d] = date.split('-').map(Number);
  const [hh, mm] = time.split(':').map(Number);
  return new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: 'UTC' })
    .format(new Date(Date.UTC(y, m - 1, d, hh, mm)));
}

/** Human label of a priority. */
export function priorityLabel(priority) {
  return { urgent: 'Urgent', high: 'High', medium: 'Medium', low: 'Low', none: 'No priority' }[priority] || priority;
}

/** Tags typed as "home, errands #x" → ["home", "errands", "x"] (lower-cased, no duplicates). */
export function parseTags(text) {
  const tags = text.split(/[\s,]+/).map((t) => t.replace(/^#/, '').trim().toLowerCase()).filter(Boolean);
  return [...new Set(tags)];
}

/** "PT1H" → "1 hour before" etc. (only the shapes the editor writes; others verbatim). */
export function describeDuration(iso) {
  const match = /^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$/.exec(iso || '');
  if (!match) return iso;
  const units = [['week', match[1]], ['day', match[2]], ['hour', match[3]], ['minute', match[4]]]
    .filter(([, n]) => n && Number(n) > 0)
    .map(([unit, n]) => `${Number(n)} ${unit}${Number(n) === 1 ? '' : 's'}`);
  return units.length ? `${units.join(' ')} before` : 'at the due time';
}
