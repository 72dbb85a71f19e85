"""Pure domain: appointments, reminder protocols, planning and reconciling. No I/O, no clock."""
