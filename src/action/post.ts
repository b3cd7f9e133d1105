// The GitHub Action's post entry point, bundled into action/dist/post.cjs (scripts/bundle-action.mjs).
import { runPost } from './post-step.js';

void runPost(process.argv[1] ?? '');
