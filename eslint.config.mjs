import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/**", "bin/**", "bench/results/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  // the sample client runs in a browser
  { files: ["client/**/*.js"], languageOptions: { globals: { document: "readonly", fetch: "readonly" } } },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
);
