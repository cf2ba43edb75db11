"""Dose, the clinical yardstick: a plan optimised on the real CT (pyRadPlan: photons and protons), recomputed on the
synthetic CT, and the metrics SynthRAD2023/2025 report (docs/dose.md)."""
