// MathJax configuration, read by javascripts/mathjax/tex-svg.js (shipped with the
// site, so formulas render offline). pymdownx.arithmatex (generic mode) wraps each
// formula in an element of class "arithmatex" with \( \) or \[ \] delimiters.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  svg: {
    fontCache: "global",
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Typeset again whenever Material swaps the page content (instant navigation).
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.typesetPromise();
  }
});
