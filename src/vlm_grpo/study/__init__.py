"""Studies (conditions x seeds at one step budget, shipped presets under `presets/`) and reports."""
