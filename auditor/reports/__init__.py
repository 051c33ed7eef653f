"""Reports rendered from results: terminal, Markdown, HTML, JUnit, SARIF and OSCAL."""
