"""Exploratory data analysis: pure tables and plotly figures, image statistics, the HTML report."""
