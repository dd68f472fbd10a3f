-- The UID of the iCalendar VTODO a task was imported from; exports keep it.
ALTER TABLE tasks ADD COLUMN ical_uid TEXT;
