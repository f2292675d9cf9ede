//! Tests of the scanner profiles, render_scan and write_dataset_with.
