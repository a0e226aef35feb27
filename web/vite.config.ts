import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev` serves the UI with hot reload and forwards the APIs to the
// gateway in $ORBIT_ENDPOINT (orbit dev prints it); `npm run build` writes
// dist/, which the gateway serves with --web-dir (docs/web.md).
const gateway = process.env.ORBIT_ENDPOINT ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 1024 },
  server: {
    host: "127.0.0.1",
    proxy: { "^/orbit\\.": { target: gateway, changeOrigin: true } },
  },
});
