"""Benchmarks: scenarios measured against a baseline in the same run (`python manage.py bench`)."""
