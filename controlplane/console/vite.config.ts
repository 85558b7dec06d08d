// Built files are served by meshgate-control under /console/ (index.html also at /).
export default {
  base: "/console/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
};
