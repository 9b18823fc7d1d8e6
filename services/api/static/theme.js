// Light, dark or the system's choice (auto), remembered; set before the page paints.
document.documentElement.dataset.theme = localStorage.getItem("tubeflow-theme") || "auto";
